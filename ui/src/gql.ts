import { Client, cacheExchange, fetchExchange, subscriptionExchange } from "urql";
import { createClient as createWs } from "graphql-ws";
import { getToken } from "./auth";

/** One urql client per token: queries over HTTP, subscriptions over graphql-ws (same bearer token). */
export function makeClient(token: string): Client {
  let ws: ReturnType<typeof createWs> | null = null;
  const wsClient = () =>
    (ws ??= createWs({
      url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`,
      connectionParams: () => ({ Authorization: `Bearer ${getToken() ?? token}` }),
      lazy: true,
    }));
  return new Client({
    url: "/graphql",
    requestPolicy: "cache-and-network",
    fetchOptions: () => ({ headers: { authorization: `Bearer ${getToken() ?? token}` } }),
    exchanges: [
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => ({ unsubscribe: wsClient().subscribe({ ...request, query: request.query ?? "" }, sink) }),
        }),
      }),
    ],
  });
}

export function errorText(error: { message: string; graphQLErrors?: { message: string }[] } | undefined): string {
  if (!error) return "";
  return error.graphQLErrors?.length ? error.graphQLErrors.map((e) => e.message).join("; ") : error.message;
}
