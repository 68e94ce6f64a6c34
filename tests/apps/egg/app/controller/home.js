'use strict';

const { Controller } = require('egg');

class HomeController extends Controller {
  async index() {
    const version = process.env.APP_VERSION || 'v1';
    // Read by `baton probe --version-header x-version`.
    this.ctx.set('x-version', version);
    this.ctx.body = `version=${version} pid=${process.pid}\n`;
  }

  // A request that takes `ms` milliseconds, for draining under load.
  async slow() {
    const ms = Number(this.ctx.query.ms || 1000);
    await new Promise(resolve => setTimeout(resolve, ms));
    this.ctx.body = `version=${process.env.APP_VERSION || 'v1'} slow\n`;
  }
}

module.exports = HomeController;
