// The postgres project of jest.config.js: the suites' databases are schemas of the throwaway
// PostgreSQL server (pg-global.js).
process.env.LINKVAULT_TEST_STORE = 'postgres'
