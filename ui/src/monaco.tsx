// Monaco from our own bundle: @monaco-editor/react would otherwise load it from a CDN, which users behind
// firewalls cannot reach. Only the editor core is bundled, with a small JSON colouring of our own: monaco's
// JSON language service (validation, schemas) would add ~1.6 MB for views that are read-only anyway.
import Editor, { loader } from "@monaco-editor/react";
import * as monaco from "monaco-editor/editor/editor.api";
import EditorWorker from "monaco-editor/editor/editor.worker?worker";

self.MonacoEnvironment = { getWorker: () => new EditorWorker() };
loader.config({ monaco });

const JSON_VIEW = "json-view";
monaco.languages.register({ id: JSON_VIEW });
monaco.languages.setMonarchTokensProvider(JSON_VIEW, {
  tokenizer: {
    root: [
      [/"(?:[^"\\]|\\.)*"(?=\s*:)/, "type"], // keys
      [/"(?:[^"\\]|\\.)*"/, "string"],
      [/-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/, "number"],
      [/\b(?:true|false|null)\b/, "keyword"],
      [/[{}[\],:]/, "delimiter"],
    ],
  },
});
monaco.languages.setLanguageConfiguration(JSON_VIEW, { brackets: [["{", "}"], ["[", "]"]] });

export default function MonacoJson({ text, height, label }: { text: string; height: number; label: string }) {
  return (
    <Editor height={height} language={JSON_VIEW} value={text} theme="vs" loading={<pre className="p-3 text-xs">{text}</pre>}
      options={{ readOnly: true, domReadOnly: true, minimap: { enabled: false }, scrollBeyondLastLine: false,
        wordWrap: "on", fontSize: 12, lineNumbers: "off", folding: true, automaticLayout: true, ariaLabel: label,
        renderLineHighlight: "none", contextmenu: false, quickSuggestions: false, links: false }} />
  );
}
