"use client";

import { useId, type ReactNode } from "react";

export interface FieldProps {
  label: string;
  name: string;
  errors?: string[];
  hint?: ReactNode;
  children: (props: {
    id: string;
    name: string;
    "aria-invalid": boolean;
    "aria-describedby": string | undefined;
  }) => ReactNode;
}

/** A labelled field with its hint and the server's errors beside it. */
export function Field({ label, name, errors, hint, children }: FieldProps) {
  const id = useId();
  const hintId = hint ? `${id}-hint` : undefined;
  const errorId = errors && errors.length ? `${id}-error` : undefined;
  const describedBy = [hintId, errorId].filter(Boolean).join(" ") || undefined;
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      {children({ id, name, "aria-invalid": Boolean(errorId), "aria-describedby": describedBy })}
      {hint ? (
        <p className="hint" id={hintId}>
          {hint}
        </p>
      ) : null}
      {errorId ? (
        <p className="error" id={errorId} role="alert" data-testid={`error-${name}`}>
          {errors!.join(" ")}
        </p>
      ) : null}
    </div>
  );
}

/** A form-level message (not tied to one field). */
export function FormError({ message }: { message: string | null }) {
  if (!message) return null;
  return (
    <p className="error form-error" role="alert" data-testid="form-error">
      {message}
    </p>
  );
}
