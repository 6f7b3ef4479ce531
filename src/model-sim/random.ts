export { seededRandom, type Random } from '../common/random.js';
