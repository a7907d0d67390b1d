/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  testMatch: ['<rootDir>/__test__/**/*.test.js', '<rootDir>/server/__test__/**/*.test.js'],
  testTimeout: 60000,
  // Tests spawn child processes and open files; two workers fit a 2-core machine.
  maxWorkers: 2,
}
