import { useEffect, useState } from "react";

// A tiny history router: the API serves index.html for every console path (SPA fallback).
export function navigate(path: string): void {
  if (location.pathname + location.search !== path) history.pushState(null, "", path);
  window.dispatchEvent(new Event("nexus:navigate"));
}

export function usePath(): string {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const update = () => setPath(location.pathname);
    window.addEventListener("popstate", update);
    window.addEventListener("nexus:navigate", update);
    return () => {
      window.removeEventListener("popstate", update);
      window.removeEventListener("nexus:navigate", update);
    };
  }, []);
  return path;
}
