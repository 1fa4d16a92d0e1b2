import Link from "next/link";

export default function NotFound() {
  return (
    <main id="main" className="main narrow">
      <h1 className="screen-title">Page not found</h1>
      <p>
        This page does not exist. <Link href="/">Go to UniMatch</Link>.
      </p>
    </main>
  );
}
