"use client";

import { useCallback, useEffect, useState } from "react";

import { Field } from "@/components/Field";
import { useRequireMe } from "@/components/Session";
import { Shell } from "@/components/Shell";
import { ApiError, api } from "@/lib/api";

interface Report {
  report_id: string;
  reason: string;
  details: string;
  status: string;
  created_at: string;
  reporter: { user_id: string; display_name: string; email: string };
  reported_user: {
    user_id: string;
    display_name: string;
    email: string;
    is_suspended: boolean;
    open_reports: number;
  };
}

function inDays(days: number): string {
  return new Date(Date.now() + days * 86_400_000).toISOString();
}

function ReportCard({ report, onDone }: { report: Report; onDone: () => void }) {
  const [days, setDays] = useState("7");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function resolve(action: "dismiss" | "warn" | "suspend" | "ban") {
    setBusy(true);
    setError(null);
    try {
      await api(`/moderation/reports/${report.report_id}/resolve`, {
        body: action === "suspend" ? { action, until: inDays(Number(days) || 7) } : { action },
      });
      onDone();
    } catch (e) {
      setError(e instanceof ApiError ? e.summary : "Failed.");
    } finally {
      setBusy(false);
    }
  }

  return (
    <article className="report" data-testid="report" aria-labelledby={`r-${report.report_id}`}>
      <h2 id={`r-${report.report_id}`}>
        {report.reported_user.display_name} · {report.reason.replace(/_/g, " ")}
      </h2>
      <p>{report.details || "No details given."}</p>
      <p className="hint">
        Reported by {report.reporter.display_name} on {new Date(report.created_at).toLocaleString()} ·{" "}
        {report.reported_user.open_reports} open report(s)
        {report.reported_user.is_suspended ? " · suspended" : ""}
      </p>
      {error ? (
        <p className="error" role="alert">
          {error}
        </p>
      ) : null}
      <Field label="Suspend for (days)" name={`days-${report.report_id}`}>
        {(p) => <input {...p} type="number" min={1} max={365} value={days} onChange={(e) => setDays(e.target.value)} />}
      </Field>
      <div className="row">
        <button type="button" onClick={() => void resolve("dismiss")} disabled={busy}>
          Dismiss
        </button>
        <button type="button" onClick={() => void resolve("warn")} disabled={busy}>
          Warn
        </button>
        <button type="button" className="primary" onClick={() => void resolve("suspend")} disabled={busy}>
          Suspend
        </button>
        <button type="button" onClick={() => void resolve("ban")} disabled={busy}>
          Ban
        </button>
      </div>
    </article>
  );
}

export default function ModerationPage() {
  const me = useRequireMe();
  const [reports, setReports] = useState<Report[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(() => {
    api<{ reports: Report[] }>("/moderation/reports?status=open")
      .then((page) => setReports(page.reports))
      .catch((e) => setError(e instanceof ApiError ? e.summary : "Could not load reports."));
  }, []);

  useEffect(() => {
    if (me?.user.role === "moderator") load();
  }, [me, load]);

  if (!me) return <Shell title="Reports">{null}</Shell>;
  if (me.user.role !== "moderator") {
    return (
      <Shell title="Reports">
        <p>This screen is for moderators.</p>
      </Shell>
    );
  }
  return (
    <Shell title="Reports">
      {error ? (
        <p className="error" role="alert">
          {error}
        </p>
      ) : null}
      {reports && reports.length === 0 ? <p className="empty">No open reports.</p> : null}
      {reports?.map((r) => <ReportCard key={r.report_id} report={r} onDone={load} />)}
    </Shell>
  );
}
