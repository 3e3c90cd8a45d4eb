import { MainAreaWidget, ReactWidget, UseSignal } from '@jupyterlab/apputils';
import { ISignal } from '@lumino/signaling';
import * as React from 'react';

import { offgridIcon } from './icon';

/** The id of the `kind` tab of a model (one tab per model and kind). */
export function tabId(kind: string, modelName: string): string {
  return `offgrid-${kind}-${modelName}`;
}

/**
 * A main-area tab about one local model, re-rendering `render` whenever `changed` fires.
 *
 * @param kind `chat` or `benchmark`: the tab's id is `offgrid-{kind}-{model}`
 * @param label the tab's title before the model's name
 */
export function modelTab(
  kind: string,
  label: string,
  modelName: string,
  changed: ISignal<unknown, void>,
  render: () => JSX.Element
): MainAreaWidget {
  const content = ReactWidget.create(<UseSignal signal={changed}>{render}</UseSignal>);
  const widget = new MainAreaWidget({ content });
  widget.id = tabId(kind, modelName);
  widget.title.label = `${label}: ${modelName}`;
  widget.title.icon = offgridIcon;
  widget.title.closable = true;
  widget.title.dataset = { model: modelName }; // what the layout restorer reopens
  return widget;
}
