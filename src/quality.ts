/**
 * The quality section's logic, apart from React so Jest tests it: which local models are
 * variants of one model, the body of `POST /v1/quality`, the Pareto front, and the layout of
 * the scatter chart (KLD against tokens/s or file size).
 */
import { ILocalModel, IQualityOptions, IQualityRow } from './tokens';

/** A model's name without its quantization, lower-cased: what its variants share. */
export function baseName(name: string, quant: string | null): string {
  let base = name.toLowerCase();
  const at = quant ? base.lastIndexOf(quant.toLowerCase()) : -1;
  if (quant && at >= 0) {
    base = base.slice(0, at) + base.slice(at + quant.length);
  }
  return base.replace(/[-_.]{2,}/g, '-').replace(/^[-_.]+|[-_.]+$/g, '');
}

/**
 * The local variants of `name` (itself included), largest file first: the models of its Hub
 * repo, or of its name without the quantization.
 */
export function localVariants(name: string, models: ILocalModel[]): ILocalModel[] {
  const model = models.find(m => m.id === name);
  if (!model) {
    return [];
  }
  const base = baseName(model.id, model.quantization);
  return models
    .filter(
      m =>
        (model.repo_id !== null && m.repo_id === model.repo_id) ||
        baseName(m.id, m.quantization) === base
    )
    .sort((a, b) => b.size - a.size);
}

/** The body of `POST /v1/quality` for these options (defaults left out). */
export function qualityBody(options: IQualityOptions): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model: options.model,
    n_ctx: options.n_ctx,
    speed: options.speed
  };
  if (options.chunks > 0) {
    body.chunks = options.chunks;
  }
  if (options.reference.trim() !== '') {
    body.reference = options.reference.trim();
  }
  const quants = options.quants
    .split(',')
    .map(quant => quant.trim())
    .filter(quant => quant !== '');
  if (quants.length > 0) {
    body.quants = quants;
  }
  if (options.source === 'text') {
    body.text = options.text;
  } else if (options.source !== 'sample') {
    body.dataset = options.source;
  }
  return body;
}

/** Whether each point is on the Pareto front: no other is as good on both axes and better on
 * one (lower `y` is better; larger `x` when `largerXBetter`, else smaller). */
export function paretoFront(points: { x: number; y: number }[], largerXBetter: boolean): boolean[] {
  const sign = largerXBetter ? 1 : -1;
  return points.map(p =>
    !points.some(
      q =>
        sign * q.x >= sign * p.x && q.y <= p.y && (sign * q.x > sign * p.x || q.y < p.y)
    )
  );
}

/** Round ticks (steps of 1, 2 or 5 times a power of ten) covering `min`..`max`. */
export function niceTicks(min: number, max: number, count = 5): number[] {
  let low = min;
  let high = max;
  if (!(high > low)) {
    const pad = Math.abs(low) * 0.1 || 1;
    low -= pad;
    high += pad;
  }
  const raw = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map(f => f * power).find(s => s >= raw * (1 - 1e-9)) ?? 10 * power;
  const first = Math.floor(low / step + 1e-9);
  const last = Math.ceil(high / step - 1e-9);
  const ticks: number[] = [];
  for (let i = first; i <= last; i++) {
    ticks.push(Number((i * step).toPrecision(12)));
  }
  return ticks;
}

/** One variant on the chart, at pixel (`px`, `py`). */
export interface IChartPoint {
  label: string;
  x: number;
  y: number;
  px: number;
  py: number;
  front: boolean;
  reference: boolean;
}

/** A tick of an axis: its value, where it is (pixels) and its text. */
export interface ITick {
  value: number;
  at: number;
  text: string;
}

/** Everything the SVG draws. */
export interface IQualityChart {
  width: number;
  height: number;
  plot: { left: number; top: number; right: number; bottom: number };
  xLabel: string;
  yLabel: string;
  points: IChartPoint[];
  /** The front's points in `x` order, as an SVG polyline's `points`. */
  frontLine: string;
  xTicks: ITick[];
  yTicks: ITick[];
}

function measured(value: number | null | undefined): value is number {
  return typeof value === 'number' && isFinite(value);
}

/**
 * Mean KLD against generation tokens/s (when every variant has it, else file size), the
 * Pareto front marked and joined, points labelled by quant; null without rows.
 */
export function qualityChart(rows: IQualityRow[], width = 440, height = 300): IQualityChart | null {
  if (rows.length === 0) {
    return null;
  }
  const speed = rows.every(row => measured(row.generation_tokens_per_sec));
  const xs = rows.map(row => (speed ? (row.generation_tokens_per_sec as number) : row.file_size_mb));
  const ys = rows.map(row => row.kld);
  const front = paretoFront(
    xs.map((x, i) => ({ x, y: ys[i] })),
    speed
  );
  const plot = { left: 62, top: 14, right: width - 64, bottom: height - 42 };
  const xTicks = niceTicks(Math.min(...xs), Math.max(...xs));
  const yTicks = niceTicks(Math.min(0, ...ys), Math.max(...ys));
  const scale = (ticks: number[], from: number, to: number) => {
    const low = ticks[0];
    const span = ticks[ticks.length - 1] - low;
    return (value: number) => from + ((value - low) / span) * (to - from);
  };
  const inset = 10; // points and labels clear of the frame
  const px = scale(xTicks, plot.left + inset, plot.right - inset);
  const py = scale(yTicks, plot.bottom - inset, plot.top + inset);
  const text = (value: number) => String(Number(value.toPrecision(4)));
  const points = rows.map((row, i) => ({
    label: row.quant ?? row.model,
    x: xs[i],
    y: ys[i],
    px: px(xs[i]),
    py: py(ys[i]),
    front: front[i],
    reference: row.reference
  }));
  const frontLine = points
    .filter(p => p.front)
    .sort((a, b) => a.x - b.x)
    .map(p => `${p.px.toFixed(1)},${p.py.toFixed(1)}`)
    .join(' ');
  return {
    width,
    height,
    plot,
    xLabel: speed ? 'generation tokens/s' : 'file size (MB)',
    yLabel: 'mean KLD vs reference',
    points,
    frontLine,
    xTicks: xTicks.map(value => ({ value, at: px(value), text: text(value) })),
    yTicks: yTicks.map(value => ({ value, at: py(value), text: text(value) }))
  };
}
