import { LabIcon } from '@jupyterlab/ui-components';

/** A plug off the grid: the sidebar's tab icon. */
export const offgridIcon = new LabIcon({
  name: 'offgrid-nb:icon',
  svgstr: `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16">
<g class="jp-icon3" fill="#616161"><path d="M9 2h2v5H9zm4 0h2v5h-2zM6 8h12v3a6 6 0 0 1-5 5.9V22h-2v-5.1A6 6 0 0 1 6 11z"/></g></svg>`
});
