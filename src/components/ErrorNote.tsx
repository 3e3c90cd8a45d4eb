import * as React from 'react';

/** An API error in place: its message, and its hint when it has one. */
export function ErrorNote(props: { error?: { message: string; hint?: string } | null }): JSX.Element | null {
  if (!props.error) {
    return null;
  }
  return (
    <div className="offgrid-Error" role="alert" data-testid="offgrid-error">
      <div className="offgrid-Error-message">{props.error.message}</div>
      {props.error.hint && <div className="offgrid-Error-hint">{props.error.hint}</div>}
    </div>
  );
}
