/**
 * The sidebar: a `SidePanel` with one accordion section per job (search, downloads, models).
 */
import { ReactWidget, UseSignal } from '@jupyterlab/apputils';
import { SidePanel } from '@jupyterlab/ui-components';
import * as React from 'react';

import { offgridIcon } from '../icon';
import { OffgridModel } from '../model';
import { SIDEBAR_ID } from '../tokens';
import { DownloadsSection } from './DownloadsSection';
import { IModelActions, LocalModelsSection } from './LocalModelsSection';
import { SearchSection } from './SearchSection';

function section(model: OffgridModel, label: string, render: () => JSX.Element): ReactWidget {
  const widget = ReactWidget.create(
    <UseSignal signal={model.changed}>{render}</UseSignal>
  );
  widget.title.label = label;
  widget.addClass('offgrid-SectionWidget');
  return widget;
}

/** The left-area panel over `model`. */
export function createSidebar(model: OffgridModel, actions: IModelActions): SidePanel {
  const panel = new SidePanel();
  panel.id = SIDEBAR_ID;
  panel.addClass('offgrid-Sidebar');
  panel.title.icon = offgridIcon;
  panel.title.caption = 'OffGrid models';
  panel.addWidget(section(model, 'Search the Hub', () => <SearchSection model={model} />));
  panel.addWidget(section(model, 'Downloads', () => <DownloadsSection model={model} />));
  panel.addWidget(
    section(model, 'Local models', () => <LocalModelsSection model={model} actions={actions} />)
  );
  return panel;
}
