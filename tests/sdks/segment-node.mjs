// The SDK matrix's visit with @segment/analytics-node, at its defaults but for `host` and the write
// key: node segment-node.mjs '{"host": ..., "writeKey": ..., "visit": {...}}'. Prints {"errors": [..]}.
import { Analytics } from '@segment/analytics-node';

const { host, writeKey, visit } = JSON.parse(process.argv[2]);
const analytics = new Analytics({ writeKey, host });
const errors = [];
analytics.on('error', (err) => errors.push(`error event: ${err.code} ${err.reason ?? ''}`));
const delivered = (err) => err && errors.push(`delivery failed: ${err.message ?? err}`);
const { anonymousId, userId } = visit;

analytics.page({
  anonymousId,
  name: 'Landing',
  properties: { url: visit.url },
  context: { campaign: visit.campaign, page: { url: visit.url } },
  timestamp: new Date(visit.pageAt),
}, delivered);
analytics.identify({
  userId, anonymousId, traits: { email: visit.email }, timestamp: new Date(visit.identifyAt),
}, delivered);
analytics.track({
  userId,
  anonymousId,
  event: 'Order Completed',
  properties: { order_id: visit.orderId, revenue: visit.revenue, currency: visit.currency },
  timestamp: new Date(visit.orderAt),
}, delivered);
await analytics.closeAndFlush({ timeout: 60000 });
console.log(JSON.stringify({ errors }));
