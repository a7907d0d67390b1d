'use strict'
// cobalt routes: filled in by the next commits.

module.exports = async function cobaltRoutes() {}
