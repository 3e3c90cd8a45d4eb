/**
 * The quality section's logic: variants of one model, the request body, the Pareto front and
 * the scatter chart's layout.
 */
import { baseName, localVariants, niceTicks, paretoFront, qualityBody, qualityChart } from '../quality';
import { ILocalModel, IQualityRow } from '../tokens';

function local(id: string, quantization: string | null, size: number, repo_id: string | null = null): ILocalModel {
  return {
    id,
    size,
    size_gb: size / 1e9,
    quantization,
    parameter_size: null,
    repo_id,
    architecture: 'llama',
    context_length: 2048,
    chat_template: false,
    loaded: false
  };
}

function row(quant: string, kld: number, size: number, speed: number | null): IQualityRow {
  return {
    model: `m-${quant}`,
    quant,
    file_size_mb: size,
    bits_per_weight: 4,
    reference: kld === 0,
    ppl: 10,
    ppl_err: 0.1,
    ln_ppl_ratio: 0,
    kld,
    kld_err: 0,
    kld_p99: 0,
    same_top_pct: 100,
    same_top_err: 0,
    tokens_scored: 31,
    chunks: 1,
    generation_tokens_per_sec: speed
  };
}

/** The test table of tests/test_quality.py: Q4_0 is beaten by Q4_K_M on speed and KLD. */
const ROWS = [
  row('Q8_0', 0.0, 280, 50),
  row('Q4_K_M', 0.05, 240, 70),
  row('Q3_K_S', 0.5, 225, 75),
  row('Q4_0', 0.2, 250, 60)
];

describe('variants of one model', () => {
  it('strips the quantization from the name', () => {
    expect(baseName('qwen2.5-0.5b-instruct-q4_k_m', 'Q4_K_M')).toBe('qwen2.5-0.5b-instruct');
    expect(baseName('Model-Q4_K_M-imat', 'Q4_K_M')).toBe('model-imat');
    expect(baseName('tiny-llama-F32', null)).toBe('tiny-llama-f32');
  });

  it('groups by repo or by base name, largest first, the model itself included', () => {
    const models = [
      local('tiny-llama-Q8_0', 'Q8_0', 20),
      local('other-Q8_0', 'Q8_0', 30),
      local('tiny-llama-F32', 'F32', 80),
      local('renamed', 'Q2_K', 5, 'org/tiny-GGUF'),
      local('tiny-llama-Q4_K_M', 'Q4_K_M', 10, 'org/tiny-GGUF')
    ];
    expect(localVariants('tiny-llama-Q4_K_M', models).map(m => m.id)).toEqual([
      'tiny-llama-F32',
      'tiny-llama-Q8_0',
      'tiny-llama-Q4_K_M',
      'renamed'
    ]);
    expect(localVariants('other-Q8_0', models).map(m => m.id)).toEqual(['other-Q8_0']);
    expect(localVariants('missing', models)).toEqual([]);
  });
});

describe('the request', () => {
  const options = {
    model: ['a-Q8_0', 'a-Q4_K_M'],
    n_ctx: 256,
    chunks: 0,
    speed: true,
    reference: '',
    quants: '',
    source: 'sample',
    text: ''
  };

  it('leaves the defaults out', () => {
    expect(qualityBody(options)).toEqual({ model: ['a-Q8_0', 'a-Q4_K_M'], n_ctx: 256, speed: true });
  });

  it('sends chunks, reference, quants and the text or dataset', () => {
    const repo = { ...options, model: 'org/a-GGUF', chunks: 4, reference: ' Q8_0 ', quants: 'Q8_0, Q4_K_M,' };
    expect(qualityBody({ ...repo, source: 'wikitext-2' })).toEqual({
      model: 'org/a-GGUF',
      n_ctx: 256,
      speed: true,
      chunks: 4,
      reference: 'Q8_0',
      quants: ['Q8_0', 'Q4_K_M'],
      dataset: 'wikitext-2'
    });
    expect(qualityBody({ ...options, source: 'text', text: 'Some text.' }).text).toBe('Some text.');
  });
});

describe('the Pareto front', () => {
  it('keeps the points no other beats on both axes', () => {
    const points = ROWS.map(r => ({ x: r.generation_tokens_per_sec as number, y: r.kld }));
    expect(paretoFront(points, true)).toEqual([true, true, true, false]);
    const sizes = ROWS.map(r => ({ x: r.file_size_mb, y: r.kld }));
    expect(paretoFront(sizes, false)).toEqual([true, true, true, false]);
  });

  it('keeps equal points both', () => {
    expect(paretoFront([{ x: 1, y: 1 }, { x: 1, y: 1 }], true)).toEqual([true, true]);
  });
});

describe('the chart', () => {
  it('has round ticks covering the data', () => {
    expect(niceTicks(0, 0.5)).toEqual([0, 0.1, 0.2, 0.3, 0.4, 0.5]);
    expect(niceTicks(50, 75)).toEqual([50, 55, 60, 65, 70, 75]);
    expect(niceTicks(3, 3)).toEqual([2.6, 2.8, 3, 3.2, 3.4]);
  });

  it('puts KLD against tokens/s, joins the front in x order and labels by quant', () => {
    const chart = qualityChart(ROWS)!;
    expect(chart.xLabel).toBe('generation tokens/s');
    const byLabel = Object.fromEntries(chart.points.map(p => [p.label, p]));
    expect(byLabel.Q4_0.front).toBe(false);
    expect(byLabel.Q8_0.reference).toBe(true);
    // inside the plot; faster is right, lower KLD is down
    for (const p of chart.points) {
      expect(p.px).toBeGreaterThanOrEqual(chart.plot.left);
      expect(p.px).toBeLessThanOrEqual(chart.plot.right);
      expect(p.py).toBeGreaterThanOrEqual(chart.plot.top);
      expect(p.py).toBeLessThanOrEqual(chart.plot.bottom);
    }
    expect(byLabel.Q3_K_S.px).toBeGreaterThan(byLabel.Q8_0.px);
    expect(byLabel.Q8_0.py).toBe(chart.yTicks[0].at); // KLD 0 on the lowest tick
    const line = chart.frontLine.split(' ').map(pair => Number(pair.split(',')[0]));
    expect(line).toEqual([...line].sort((a, b) => a - b));
    expect(line).toHaveLength(3);
    expect(chart.yTicks[0].text).toBe('0');
  });

  it('falls back to file size without speed figures, and draws nothing without rows', () => {
    const chart = qualityChart(ROWS.map(r => ({ ...r, generation_tokens_per_sec: null })))!;
    expect(chart.xLabel).toBe('file size (MB)');
    expect(chart.points.filter(p => p.front).map(p => p.label)).toEqual(['Q8_0', 'Q4_K_M', 'Q3_K_S']);
    expect(qualityChart([])).toBeNull();
  });
});
