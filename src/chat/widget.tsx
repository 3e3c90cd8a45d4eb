/**
 * A chat tab: the conversation rendered as Markdown by JupyterLab's own renderer, streamed.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { Button } from '@jupyterlab/ui-components';
import * as React from 'react';

import { ErrorNote } from '../components/ErrorNote';
import { modelTab } from '../tab';
import { IChatMessage } from '../tokens';
import { ChatModel } from './model';

function Markdown(props: { text: string; rendermime: IRenderMimeRegistry }): JSX.Element {
  const host = React.useRef<HTMLDivElement>(null);
  const renderer = React.useMemo(
    () => props.rendermime.createRenderer('text/markdown'),
    [props.rendermime]
  );
  React.useEffect(() => {
    host.current?.appendChild(renderer.node);
    return () => renderer.dispose();
  }, [renderer]);
  React.useEffect(() => {
    void renderer.renderModel(new MimeModel({ data: { 'text/markdown': props.text }, trusted: false }));
  }, [renderer, props.text]);
  return <div ref={host} className="offgrid-Markdown" />;
}

function Message(props: { message: IChatMessage; rendermime: IRenderMimeRegistry }) {
  const { message } = props;
  return (
    <div
      className={`offgrid-ChatMessage offgrid-ChatMessage-${message.role}`}
      data-testid="offgrid-chat-message"
      data-role={message.role}
    >
      <div className="offgrid-ChatRole">{message.role === 'user' ? 'You' : 'Assistant'}</div>
      {message.role === 'user' ? (
        <div className="offgrid-ChatText">{message.content}</div>
      ) : (
        <Markdown text={message.content || '…'} rendermime={props.rendermime} />
      )}
    </div>
  );
}

function ChatView(props: { model: ChatModel; rendermime: IRenderMimeRegistry }): JSX.Element {
  const { model } = props;
  const [text, setText] = React.useState('');
  const send = (event: React.FormEvent) => {
    event.preventDefault();
    const message = text;
    setText('');
    void model.send(message);
  };
  const usage = model.usage;
  return (
    <div className="offgrid-Chat">
      <div className="offgrid-ChatMessages">
        {model.messages.map((message, index) => (
          <Message key={index} message={message} rendermime={props.rendermime} />
        ))}
      </div>
      <ErrorNote error={model.error} />
      {usage && (
        <div className="offgrid-Hint offgrid-Usage" data-testid="offgrid-chat-usage">
          {usage.prompt_tokens} prompt + {usage.completion_tokens} tokens ·{' '}
          {usage.tokens_per_second.toFixed(1)} tokens/s · first token {Math.round(usage.first_token_ms)} ms
        </div>
      )}
      <form className="offgrid-ChatForm" onSubmit={send}>
        <textarea
          className="jp-mod-styled offgrid-ChatInput"
          placeholder={`Message ${model.modelName}`}
          data-testid="offgrid-chat-input"
          value={text}
          onChange={event => setText(event.target.value)}
          onKeyDown={event => {
            if (event.key === 'Enter' && !event.shiftKey) {
              send(event);
            }
          }}
        />
        <div className="offgrid-Actions">
          <Button type="submit" data-testid="offgrid-chat-send" disabled={model.streaming}>
            Send
          </Button>
          <Button type="button" onClick={() => model.stop()} disabled={!model.streaming}>
            Stop
          </Button>
          <Button type="button" onClick={() => model.clear()}>
            Clear
          </Button>
        </div>
      </form>
    </div>
  );
}

/** A main-area tab chatting with one local model. */
export function createChatWidget(
  modelName: string,
  rendermime: IRenderMimeRegistry
): MainAreaWidget {
  const model = new ChatModel(modelName);
  const widget = modelTab('chat', 'Chat', modelName, model.changed, () => (
    <ChatView model={model} rendermime={rendermime} />
  ));
  widget.disposed.connect(() => model.stop());
  return widget;
}
