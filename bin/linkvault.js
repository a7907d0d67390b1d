#!/usr/bin/env node
'use strict'
// The `linkvault` command (see cli/main.js).
require('../cli/main')
  .main(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code
  })
