// The sqlite project of jest.config.js: the suites' databases are SQLite files.
process.env.LINKVAULT_TEST_STORE = 'sqlite'
