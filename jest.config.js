/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  testMatch: ['<rootDir>/__test__/**/*.test.js', '<rootDir>/server/__test__/**/*.test.js'],
  testTimeout: 60000,
  // A throwaway PostgreSQL for the suites that run on both stores (__test__/pg-keeper.js).
  globalSetup: '<rootDir>/__test__/pg-setup.js',
  globalTeardown: '<rootDir>/__test__/pg-teardown.js',
  // Tests spawn child processes and open files; two workers fit a 2-core machine.
  maxWorkers: 2,
}
