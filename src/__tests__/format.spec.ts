/**
 * What the sidebar says of a variant's offload verdict (`/v1/variants`).
 */
import { formatOffload } from '../format';

describe('formatOffload', () => {
  it('says a variant runs all on the GPU', () => {
    expect(formatOffload({ offload: 'gpu', gpu_layers: 33, n_layers: 33 })).toBe('all on GPU');
  });

  it('counts the layers of a partial offload and says what it costs', () => {
    expect(formatOffload({ offload: 'partial', gpu_layers: 17, n_layers: 33 })).toBe(
      '17/33 layers on GPU (mostly CPU-bound)'
    );
  });

  it('says nothing on a CPU-only machine or without a verdict', () => {
    expect(formatOffload({ offload: 'cpu', gpu_layers: 0, n_layers: 33 })).toBe('');
    expect(formatOffload({})).toBe('');
  });
});
