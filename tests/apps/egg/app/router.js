'use strict';

module.exports = app => {
  app.router.get('/', app.controller.home.index);
  app.router.get('/slow', app.controller.home.slow);
};
