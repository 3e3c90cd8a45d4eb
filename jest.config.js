/** Jest for the model layer (src/__tests__/): TypeScript through ts-jest, no browser needed. */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  testRegex: 'src/__tests__/.*\\.spec\\.ts$',
  modulePathIgnorePatterns: ['<rootDir>/offgrid_nb/', '<rootDir>/lib/'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }] }
};
