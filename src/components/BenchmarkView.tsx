/**
 * A benchmark tab: options, the runs the server kept for the model, and a plain SVG bar chart;
 * then the quality of the model's variants (QualitySection).
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { Button } from '@jupyterlab/ui-components';
import * as React from 'react';

import { BenchmarkModel } from '../model';
import { modelTab } from '../tab';
import { IBenchmarkOptions, IBenchmarkRun } from '../tokens';
import { ErrorNote } from './ErrorNote';
import { QualitySection } from './QualitySection';

/** Horizontal bars of generation speed, one per run (the chart the issue asks: no library). */
export function SpeedChart(props: { runs: IBenchmarkRun[] }): JSX.Element | null {
  const { runs } = props;
  if (runs.length === 0) {
    return null;
  }
  const bar = 18;
  const label = 70;
  const width = 360;
  const top = Math.max(...runs.map(r => r.results.avg_generation_tokens_per_sec), 1e-9);
  return (
    <svg
      className="offgrid-Chart"
      width={width}
      height={runs.length * (bar + 6) + 6}
      role="img"
      aria-label="generation tokens per second by run"
    >
      {runs.map((run, i) => {
        const value = run.results.avg_generation_tokens_per_sec;
        const y = 6 + i * (bar + 6);
        const length = ((width - label - 90) * value) / top;
        return (
          <g key={run.id}>
            <text x={0} y={y + bar - 5} className="offgrid-ChartLabel">
              run {i + 1}
            </text>
            <rect x={label} y={y} width={Math.max(length, 1)} height={bar} className="offgrid-ChartBar" />
            <text x={label + length + 4} y={y + bar - 5} className="offgrid-ChartLabel">
              {value.toFixed(1)} tok/s
            </text>
          </g>
        );
      })}
    </svg>
  );
}

function BenchmarkView(props: { model: BenchmarkModel }): JSX.Element {
  const { model } = props;
  const [options, setOptions] = React.useState<IBenchmarkOptions>({
    prompt_tokens: 64,
    output_tokens: 32,
    iterations: 3
  });
  const number = (name: keyof IBenchmarkOptions) => ({
    type: 'number',
    min: 1,
    value: options[name],
    onChange: (event: React.ChangeEvent<HTMLInputElement>) =>
      setOptions({ ...options, [name]: Number(event.target.value) })
  });
  return (
    <div className="offgrid-Benchmark">
      <form
        className="offgrid-BenchmarkForm"
        onSubmit={event => {
          event.preventDefault();
          void model.run(options);
        }}
      >
        <label>
          prompt tokens <input className="jp-mod-styled" {...number('prompt_tokens')} />
        </label>
        <label>
          output tokens <input className="jp-mod-styled" {...number('output_tokens')} />
        </label>
        <label>
          iterations <input className="jp-mod-styled" {...number('iterations')} />
        </label>
        <Button type="submit" disabled={model.running} data-testid="offgrid-benchmark-run">
          {model.running ? 'Running…' : 'Run benchmark'}
        </Button>
      </form>
      <ErrorNote error={model.error} />
      {model.runs.length > 0 && (
        <table className="offgrid-Table" data-testid="offgrid-benchmark-results">
          <thead>
            <tr>
              <th>run</th>
              <th>prompt / output</th>
              <th>prompt tok/s</th>
              <th>generation tok/s</th>
              <th>first token ms</th>
              <th>peak RSS MB</th>
            </tr>
          </thead>
          <tbody>
            {model.runs.map((run, i) => (
              <tr key={run.id}>
                <td>{i + 1}</td>
                <td>
                  {run.config.prompt_tokens} / {run.config.output_tokens} ×{run.config.iterations}
                </td>
                <td>{run.results.avg_prompt_tokens_per_sec.toFixed(1)}</td>
                <td>{run.results.avg_generation_tokens_per_sec.toFixed(1)}</td>
                <td>{run.results.avg_time_to_first_token_ms.toFixed(0)}</td>
                <td>{run.results.peak_rss_mb.toFixed(0)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <SpeedChart runs={model.runs} />
      <QualitySection model={model.quality} />
    </div>
  );
}

/** A main-area tab benchmarking one local model; it shows the runs the server kept. */
export function createBenchmarkWidget(modelName: string): MainAreaWidget {
  const model = new BenchmarkModel(modelName);
  const widget = modelTab('benchmark', 'Benchmark', modelName, model.changed, () => (
    <BenchmarkView model={model} />
  ));
  void model.load();
  void model.quality.load();
  widget.disposed.connect(() => model.quality.dispose());
  return widget;
}
