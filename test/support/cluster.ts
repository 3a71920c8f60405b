// A cluster for one chart render or a few: the API stand-in (anonymous, as `helm --dry-run=server` talks
// to it over plain HTTP), closed after `use` whatever happens.
import { KubeApiStandIn } from "./kube-api-stand-in.ts";

export async function withCluster<T>(use: (api: KubeApiStandIn) => Promise<T>): Promise<T> {
  const api = await KubeApiStandIn.start({ anonymous: true });
  try {
    return await use(api);
  } finally {
    await api.close();
  }
}
