/** Human-readable figures. */

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

/** Bytes in decimal units (as the Hub and our CLI print them). */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !isFinite(bytes)) {
    return '?';
  }
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${UNITS[unit]}`;
}

/** A count with k / M suffixes. */
export function formatCount(count: number): string {
  if (count >= 1e6) {
    return `${(count / 1e6).toFixed(1)}M`;
  }
  if (count >= 1e3) {
    return `${(count / 1e3).toFixed(1)}k`;
  }
  return String(count);
}

/** Seconds as `1h 02m`, `3m 05s` or `12s`. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '?';
  }
  const s = Math.round(seconds);
  const pad = (n: number) => String(n).padStart(2, '0');
  if (s >= 3600) {
    return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  }
  if (s >= 60) {
    return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  }
  return `${s}s`;
}

/** What a variant's offload verdict means, as the search panel says it: `all on GPU`,
 * `20/33 layers on GPU (mostly CPU-bound)`, or nothing (a CPU-only machine, or unknown). */
export function formatOffload(variant: {
  offload?: string | null;
  gpu_layers?: number | null;
  n_layers?: number | null;
}): string {
  if (variant.offload === 'gpu') {
    return 'all on GPU';
  }
  if (variant.offload === 'partial') {
    return `${variant.gpu_layers ?? '?'}/${variant.n_layers ?? '?'} layers on GPU (mostly CPU-bound)`;
  }
  return '';
}
