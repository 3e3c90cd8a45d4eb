import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Button } from '@jupyterlab/ui-components';
import * as React from 'react';

import { formatBytes } from '../format';
import { OffgridModel } from '../model';
import { ILocalModel } from '../tokens';
import { ErrorNote } from './ErrorNote';

/** What a local model's buttons open: a chat or a benchmark tab. */
export interface IModelActions {
  openChat(name: string): void;
  openBenchmark(name: string): void;
}

/** The models folder: each model with Chat, Benchmark, Verify and Delete. */
export function LocalModelsSection(props: { model: OffgridModel; actions: IModelActions }): JSX.Element {
  const { model } = props;
  return (
    <div className="offgrid-Section offgrid-LocalModels">
      <ErrorNote error={model.errors.models} />
      {model.models.length === 0 && <div className="offgrid-Hint">No local models yet.</div>}
      <ul className="offgrid-List">
        {model.models.map(local => (
          <ModelRow key={local.id} {...props} local={local} />
        ))}
      </ul>
    </div>
  );
}

function ModelRow(props: { model: OffgridModel; actions: IModelActions; local: ILocalModel }) {
  const { model, actions, local } = props;
  const [verdict, setVerdict] = React.useState<string>('');
  const verify = async () => {
    setVerdict('verifying…');
    const ok = await model.verifyModel(local.id);
    setVerdict(ok === null ? '' : ok ? 'sha256 ok' : 'sha256 MISMATCH');
  };
  const remove = async () => {
    const answer = await showDialog({
      title: 'Delete model',
      body: `Delete ${local.id} (${formatBytes(local.size)}) from the models folder?`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (answer.button.accept) {
      await model.deleteModel(local.id);
    }
  };
  return (
    <li className="offgrid-LocalModel" data-testid="offgrid-local-model" data-model={local.id}>
      <div className="offgrid-ResultName" title={local.id}>
        {local.id}
      </div>
      <div className="offgrid-Hint">
        {formatBytes(local.size)} · {local.quantization ?? '?'}
        {local.parameter_size && ` · ${local.parameter_size}`} ·{' '}
        {local.chat_template ? 'chat template' : 'no chat template'}
        {local.loaded && ' · loaded'}
        {verdict && ` · ${verdict}`}
      </div>
      <div className="offgrid-Actions">
        <Button small onClick={() => actions.openChat(local.id)}>
          Chat
        </Button>
        <Button small onClick={() => actions.openBenchmark(local.id)}>
          Benchmark
        </Button>
        <Button small onClick={() => void verify()}>
          Verify
        </Button>
        <Button small className="offgrid-Danger" onClick={() => void remove()}>
          Delete
        </Button>
      </div>
    </li>
  );
}
