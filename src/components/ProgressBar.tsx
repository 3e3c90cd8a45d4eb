import * as React from 'react';

/** A job's progress bar, coloured by its status (downloads, quality runs). */
export function ProgressBar(props: { percent: number; status: string }): JSX.Element {
  const { percent, status } = props;
  return (
    <div
      className="offgrid-Progress"
      role="progressbar"
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={percent}
      data-testid="offgrid-progress"
    >
      <div className={`offgrid-ProgressBar offgrid-Status-${status}`} style={{ width: `${percent}%` }} />
    </div>
  );
}
