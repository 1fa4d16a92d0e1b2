"use client";

import { useState } from "react";

import { ApiError, type FieldErrors } from "./api";

/** Submitting state and the server's errors, by field and for the form. */
export function useSubmit() {
  const [busy, setBusy] = useState(false);
  const [fields, setFields] = useState<FieldErrors>({});
  const [formError, setFormError] = useState<string | null>(null);

  async function run<T>(work: () => Promise<T>, onError?: (error: ApiError) => boolean): Promise<T | undefined> {
    setBusy(true);
    setFields({});
    setFormError(null);
    try {
      return await work();
    } catch (error) {
      if (!(error instanceof ApiError)) {
        setFormError("Something went wrong. Please try again.");
        return undefined;
      }
      if (onError?.(error)) return undefined;
      const byField = error.fields;
      if (Object.keys(byField).length) setFields(byField);
      else setFormError(error.summary);
      return undefined;
    } finally {
      setBusy(false);
    }
  }

  return { busy, fields, formError, setFields, setFormError, run };
}
