'use strict'
// fiskil routes: filled in by the next commits.

module.exports = async function fiskilRoutes() {}
