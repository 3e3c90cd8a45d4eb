/**
 * The Benchmark tab's quality section: which quantization is worth it. It starts a
 * `POST /v1/quality` job over the model's local variants (or its Hub repo's), follows its
 * progress, and shows the table and a plain SVG scatter chart with the Pareto front.
 */
import { Button } from '@jupyterlab/ui-components';
import * as React from 'react';

import { formatBytes } from '../format';
import { QualityModel } from '../model';
import { qualityChart } from '../quality';
import { IQualityJob, IQualityOptions, IQualityRow } from '../tokens';
import { ErrorNote } from './ErrorNote';
import { ProgressBar } from './ProgressBar';

type Settings = Omit<IQualityOptions, 'model'>;

const DEFAULTS: Settings = {
  n_ctx: 512,
  chunks: 8,
  speed: true,
  reference: '',
  quants: '',
  source: 'sample',
  text: ''
};

function fixed(value: number | null | undefined, digits: number): string {
  return typeof value === 'number' && isFinite(value) ? value.toFixed(digits) : '–';
}

/** KLD (lower: closer to the reference) against tokens/s or size; the front joined in red. */
export function QualityChart(props: { rows: IQualityRow[] }): JSX.Element | null {
  const chart = qualityChart(props.rows);
  if (!chart) {
    return null;
  }
  const { plot } = chart;
  return (
    <svg
      className="offgrid-Chart offgrid-QualityChart"
      width={chart.width}
      height={chart.height}
      role="img"
      aria-label={`${chart.yLabel} against ${chart.xLabel}`}
      data-testid="offgrid-quality-chart"
    >
      <rect
        className="offgrid-ChartFrame"
        x={plot.left}
        y={plot.top}
        width={plot.right - plot.left}
        height={plot.bottom - plot.top}
      />
      {chart.xTicks.map(tick => (
        <g key={`x${tick.value}`}>
          <line className="offgrid-ChartGrid" x1={tick.at} x2={tick.at} y1={plot.top} y2={plot.bottom} />
          <text className="offgrid-ChartLabel" x={tick.at} y={plot.bottom + 14} textAnchor="middle">
            {tick.text}
          </text>
        </g>
      ))}
      {chart.yTicks.map(tick => (
        <g key={`y${tick.value}`}>
          <line className="offgrid-ChartGrid" x1={plot.left} x2={plot.right} y1={tick.at} y2={tick.at} />
          <text className="offgrid-ChartLabel" x={plot.left - 4} y={tick.at + 4} textAnchor="end">
            {tick.text}
          </text>
        </g>
      ))}
      <text className="offgrid-ChartLabel" x={(plot.left + plot.right) / 2} y={chart.height - 6} textAnchor="middle">
        {chart.xLabel}
      </text>
      <text
        className="offgrid-ChartLabel"
        transform={`translate(12 ${(plot.top + plot.bottom) / 2}) rotate(-90)`}
        textAnchor="middle"
      >
        {chart.yLabel}
      </text>
      <polyline className="offgrid-ChartFront" points={chart.frontLine} />
      {chart.points.map((point, i) => (
        <g key={i} data-testid="offgrid-quality-point" data-front={point.front}>
          <circle
            className={point.front ? 'offgrid-ChartPoint offgrid-ChartPoint-front' : 'offgrid-ChartPoint'}
            cx={point.px}
            cy={point.py}
            r={point.front ? 5 : 4}
          />
          <text className="offgrid-ChartLabel" x={point.px + 7} y={point.py - 7}>
            {point.reference ? `${point.label} (ref)` : point.label}
          </text>
        </g>
      ))}
    </svg>
  );
}

function QualityTable(props: { rows: IQualityRow[] }): JSX.Element {
  return (
    <table className="offgrid-Table" data-testid="offgrid-quality-results">
      <thead>
        <tr>
          <th>quant</th>
          <th>size MB</th>
          <th>bits/weight</th>
          <th>PPL ± err</th>
          <th>KLD</th>
          <th>same top %</th>
          <th>generation tok/s</th>
        </tr>
      </thead>
      <tbody>
        {props.rows.map(row => (
          <tr key={row.model} title={row.model}>
            <td>{row.reference ? `${row.quant ?? row.model} (reference)` : row.quant ?? row.model}</td>
            <td>{fixed(row.file_size_mb, 1)}</td>
            <td>{fixed(row.bits_per_weight, 2)}</td>
            <td>
              {fixed(row.ppl, 3)} ± {fixed(row.ppl_err, 3)}
            </td>
            <td>{fixed(row.kld, 4)}</td>
            <td>{fixed(row.same_top_pct, 1)}</td>
            <td>{fixed(row.generation_tokens_per_sec, 1)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function QualityProgress(props: { job: IQualityJob }): JSX.Element {
  const { job } = props;
  const progress = job.progress;
  const percent =
    job.status === 'done' ? 100 : progress ? Math.floor((100 * progress.done) / progress.total) : 0;
  return (
    <div data-testid="offgrid-quality-job" data-status={job.status}>
      <ProgressBar percent={percent} status={job.status} />
      <div className="offgrid-Hint">
        {job.status}
        {progress &&
          job.status !== 'done' &&
          ` · ${progress.model}: chunk ${progress.done} of ${progress.total} · PPL ${fixed(progress.ppl, 2)}`}
      </div>
    </div>
  );
}

/** Options, Measure / Cancel, progress, then the table and the chart of the last run. */
export function QualitySection(props: { model: QualityModel }): JSX.Element {
  const { model } = props;
  const [settings, setSettings] = React.useState<Settings>(DEFAULTS);
  const [fromRepo, setFromRepo] = React.useState(false);
  const [left, setLeft] = React.useState<string[]>([]); // variants unticked
  const chosen = model.variants.map(v => v.id).filter(id => !left.includes(id));
  const set = (change: Partial<Settings>) => setSettings({ ...settings, ...change });
  const number = (name: 'n_ctx' | 'chunks', min: number) => ({
    type: 'number',
    min,
    value: settings[name],
    onChange: (event: React.ChangeEvent<HTMLInputElement>) => set({ [name]: Number(event.target.value) })
  });
  const field = (name: 'quants' | 'reference' | 'source' | 'text') => ({
    className: 'jp-mod-styled',
    value: settings[name],
    onChange: (event: React.ChangeEvent<HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement>) =>
      set({ [name]: event.target.value })
  });
  const toggle = (id: string, on: boolean) => setLeft(on ? left.filter(other => other !== id) : [...left, id]);
  const useRepo = fromRepo && model.repo !== null;
  const result = model.job?.status === 'done' ? model.job.result : null;
  return (
    <section className="offgrid-Quality" data-testid="offgrid-quality">
      <h3>Quality per quantization</h3>
      <div className="offgrid-Hint">
        Perplexity and KL-divergence of each variant against the reference (the largest file unless
        chosen), with its speed.
      </div>
      <form
        className="offgrid-BenchmarkForm"
        onSubmit={event => {
          event.preventDefault();
          void model.start({ ...settings, model: useRepo ? model.repo! : chosen });
        }}
      >
        {model.repo !== null && (
          <label>
            <input type="checkbox" checked={fromRepo} onChange={e => setFromRepo(e.target.checked)} />
            the variants of {model.repo} (downloaded)
          </label>
        )}
        {useRepo ? (
          <label>
            quants <input placeholder="all" {...field('quants')} />
          </label>
        ) : (
          <div className="offgrid-Variants">
            {model.variants.map(variant => (
              <label key={variant.id} data-testid="offgrid-quality-variant">
                <input
                  type="checkbox"
                  checked={!left.includes(variant.id)}
                  onChange={event => toggle(variant.id, event.target.checked)}
                />
                {variant.id} ({variant.quantization ?? '?'}, {formatBytes(variant.size)})
              </label>
            ))}
          </div>
        )}
        <label>
          reference
          {useRepo ? (
            <input aria-label="reference" placeholder="largest file" {...field('reference')} />
          ) : (
            <select aria-label="reference" {...field('reference')}>
              <option value="">largest file</option>
              {chosen.map(id => (
                <option key={id} value={id}>
                  {id}
                </option>
              ))}
            </select>
          )}
        </label>
        <label>
          context <input className="jp-mod-styled" {...number('n_ctx', 16)} />
        </label>
        <label title="0: all of the text">
          chunks <input className="jp-mod-styled" {...number('chunks', 0)} />
        </label>
        <label>
          <input type="checkbox" checked={settings.speed} onChange={e => set({ speed: e.target.checked })} />
          speed too
        </label>
        <label>
          text
          <select aria-label="text" {...field('source')}>
            <option value="sample">built-in sample</option>
            <option value="wikitext-2">wikitext-2</option>
            <option value="text">my text</option>
          </select>
        </label>
        {settings.source === 'text' && (
          <textarea {...field('text')} className="jp-mod-styled offgrid-QualityText" aria-label="text to measure on" />
        )}
        <Button
          type="submit"
          disabled={model.running || (!useRepo && chosen.length === 0)}
          data-testid="offgrid-quality-run"
        >
          {model.running ? 'Measuring…' : 'Measure quality'}
        </Button>
        {model.running && (
          <Button
            onClick={() => void model.cancel()}
            disabled={model.job?.status === 'cancelling'}
            data-testid="offgrid-quality-cancel"
          >
            Cancel
          </Button>
        )}
      </form>
      {model.job && <QualityProgress job={model.job} />}
      <ErrorNote error={model.error ?? model.job?.error} />
      {result && (
        <>
          <QualityTable rows={result} />
          <QualityChart rows={result} />
          <div className="offgrid-Hint">
            Red: the Pareto front (no other variant is both faster, or smaller, and closer to the
            reference).
          </div>
        </>
      )}
    </section>
  );
}
