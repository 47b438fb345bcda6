import { Client, cacheExchange, fetchExchange, mapExchange, subscriptionExchange } from "urql";
import { createClient as createWs } from "graphql-ws";
import { getToken, sessionRefused } from "./auth";

/** One urql client per signed-in identity: queries over HTTP, subscriptions over graphql-ws. The token is read
 * at every request and connection, so a renewed access token (auth.ts) is used without a new client. */
export function makeClient(): Client {
  let ws: ReturnType<typeof createWs> | null = null;
  const wsClient = () =>
    (ws ??= createWs({
      url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`,
      connectionParams: () => ({ Authorization: `Bearer ${getToken() ?? ""}` }),
      lazy: true,
    }));
  return new Client({
    url: "/graphql",
    requestPolicy: "cache-and-network",
    fetchOptions: () => ({ headers: { authorization: `Bearer ${getToken() ?? ""}` } }),
    exchanges: [
      mapExchange({
        onError: (error) => {
          if (error.response?.status === 401 || error.graphQLErrors.some((e) => e.extensions?.code === "UNAUTHENTICATED")) {
            sessionRefused();
          }
        },
      }),
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
