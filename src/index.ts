/**
 * OffGrid in JupyterLab: a sidebar over the server extension's REST API (no kernel involved).
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, InputDialog, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';

import { createChatWidget } from './chat/widget';
import { createBenchmarkWidget } from './components/BenchmarkView';
import { createSidebar } from './components/Sidebar';
import { offgridIcon } from './icon';
import { OffgridModel } from './model';
import { tabId } from './tab';
import { CommandIDs, SIDEBAR_ID } from './tokens';

const CATEGORY = 'OffGrid';

/** The model name a command was given, else one picked from the local models. */
async function pickModel(model: OffgridModel, given: unknown): Promise<string | null> {
  if (typeof given === 'string' && given) {
    return given;
  }
  await model.refreshModels();
  const names = model.models.map(m => m.id);
  if (names.length === 0) {
    return null;
  }
  const answer = await InputDialog.getItem({ title: 'Local model', items: names });
  return answer.button.accept ? answer.value : null;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'offgrid-nb:plugin',
  description: 'Search, download, chat with and benchmark GGUF models from a sidebar.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [ILayoutRestorer, ICommandPalette, ILauncher],
  activate: (
    app: JupyterFrontEnd,
    rendermime: IRenderMimeRegistry,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    launcher: ILauncher | null
  ) => {
    const model = new OffgridModel();
    // Open chat and benchmark tabs come back after a page reload.
    const chats = new WidgetTracker<MainAreaWidget>({ namespace: 'offgrid-chat' });
    const benchmarks = new WidgetTracker<MainAreaWidget>({ namespace: 'offgrid-benchmark' });
    const open = (
      tracker: WidgetTracker<MainAreaWidget>,
      id: string,
      create: () => MainAreaWidget
    ) => {
      if (!tracker.find(tab => tab.id === id)) {
        const widget = create();
        void tracker.add(widget);
        app.shell.add(widget, 'main');
      }
      app.shell.activateById(id);
    };
    const actions = {
      openChat: (name: string) => void app.commands.execute(CommandIDs.openChat, { model: name }),
      openBenchmark: (name: string) =>
        void app.commands.execute(CommandIDs.openBenchmark, { model: name })
    };
    const sidebar = createSidebar(model, actions);
    app.shell.add(sidebar, 'left', { rank: 101 }); // the file browser is 100
    restorer?.add(sidebar, SIDEBAR_ID);
    for (const [tracker, command] of [
      [chats, CommandIDs.openChat],
      [benchmarks, CommandIDs.openBenchmark]
    ] as const) {
      void restorer?.restore(tracker, {
        command,
        args: widget => ({ model: widget.title.dataset.model }),
        name: widget => widget.id
      });
    }
    void model.start();

    app.commands.addCommand(CommandIDs.openSidebar, {
      label: 'Show the OffGrid sidebar',
      icon: offgridIcon,
      execute: () => app.shell.activateById(SIDEBAR_ID)
    });
    app.commands.addCommand(CommandIDs.search, {
      label: 'Search GGUF models on the Hub',
      execute: () => {
        app.shell.activateById(SIDEBAR_ID);
        sidebar.node.querySelector<HTMLInputElement>('.offgrid-SearchInput')?.focus();
      }
    });
    app.commands.addCommand(CommandIDs.openChat, {
      label: args => (args.model ? `Chat with ${args.model}` : 'Chat with a local model'),
      caption: 'Open a chat tab with a local model',
      icon: offgridIcon,
      execute: async args => {
        const name = await pickModel(model, args.model);
        if (name) {
          open(chats, tabId('chat', name), () => createChatWidget(name, rendermime));
        } else {
          app.shell.activateById(SIDEBAR_ID);
        }
      }
    });
    app.commands.addCommand(CommandIDs.openBenchmark, {
      label: args => (args.model ? `Benchmark ${args.model}` : 'Benchmark a local model'),
      execute: async args => {
        const name = await pickModel(model, args.model);
        if (name) {
          open(benchmarks, tabId('benchmark', name), () => createBenchmarkWidget(name));
        }
      }
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh OffGrid downloads and local models',
      execute: () => Promise.all([model.refreshJobs(), model.refreshModels()])
    });
    for (const command of Object.values(CommandIDs)) {
      palette?.addItem({ command, category: CATEGORY });
    }
    launcher?.add({ command: CommandIDs.openChat, category: 'Other', rank: 50 });
  }
};

export default plugin;
