import { Button } from '@jupyterlab/ui-components';
import * as React from 'react';

import { formatBytes, formatDuration } from '../format';
import { OffgridModel } from '../model';
import { FINISHED_STATUSES, IDownloadJob } from '../tokens';
import { ErrorNote } from './ErrorNote';
import { ProgressBar } from './ProgressBar';

/** The server's download jobs, newest first: they go on across kernel restarts and reloads. */
export function DownloadsSection(props: { model: OffgridModel }): JSX.Element {
  const { model } = props;
  const jobs = [...model.jobs].reverse();
  return (
    <div className="offgrid-Section offgrid-Downloads">
      <ErrorNote error={model.errors.jobs} />
      {jobs.length === 0 && <div className="offgrid-Hint">No downloads yet: search and pick a variant.</div>}
      <ul className="offgrid-List">
        {jobs.map(job => (
          <JobRow key={job.id} model={model} job={job} />
        ))}
      </ul>
    </div>
  );
}

function JobRow(props: { model: OffgridModel; job: IDownloadJob }) {
  const { model, job } = props;
  const finished = FINISHED_STATUSES.includes(job.status);
  const percent = job.status === 'done' ? 100 : Math.floor((job.fraction ?? 0) * 100);
  return (
    <li className="offgrid-Job" data-testid="offgrid-job" data-status={job.status}>
      <div className="offgrid-JobName" title={`${job.repository}/${job.file_name}`}>
        {job.file_name}
      </div>
      <ProgressBar percent={percent} status={job.status} />
      <div className="offgrid-Hint">
        {job.status} · {percent}% · {formatBytes(job.bytes)} / {formatBytes(job.total)}
        {!finished && ` · ${formatBytes(job.speed)}/s · ETA ${formatDuration(job.eta)}`}
      </div>
      <ErrorNote error={job.error} />
      <div className="offgrid-Actions">
        {!finished && (
          <Button small onClick={() => void model.cancel(job.id)} disabled={job.status === 'cancelling'}>
            Cancel
          </Button>
        )}
        {(job.status === 'cancelled' || job.status === 'failed') && (
          <Button small onClick={() => void model.resume(job)}>
            Resume
          </Button>
        )}
      </div>
    </li>
  );
}
