'use strict';

module.exports = {
  keys: 'baton-test-egg',
  // Logs go to the instance's output, which Baton keeps; not to ~/logs.
  logger: { disableConsoleAfterReady: false, dir: process.env.EGG_LOG_DIR || 'logs' },
};
