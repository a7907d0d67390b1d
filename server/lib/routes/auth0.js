'use strict'
// auth0 routes: filled in by the next commits.

module.exports = async function auth0Routes() {}
