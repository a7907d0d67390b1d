'use strict'
// `require('linkvault/cli')`: the command-line dispatcher and the helpers commands share (also
// for other packages' commands, such as linkvault-server's).
module.exports = { ...require('./common'), ...require('./main') }
