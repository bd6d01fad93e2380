// The SDK matrix's visit with @segment/analytics-next as a website sends it: a page (anonymous,
// the campaign in this page's utm_ query), an identify and an order, each at the visit's time.
window.sendVisit = async ({ settings, options, visit }) => {
  const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(settings, options);
  // Called together, as a page would: the batching delivery sends them in one request.
  const sent = Promise.all([
    analytics.page(null, 'Landing', {}, { timestamp: new Date(visit.pageAt) }),
    analytics.identify(visit.userId, { email: visit.email }, { timestamp: new Date(visit.identifyAt) }),
    analytics.track(
      'Order Completed',
      { order_id: visit.orderId, revenue: visit.revenue, currency: visit.currency },
      { timestamp: new Date(visit.orderAt) },
    ),
  ]);
  const deadline = new Promise((_, reject) => {
    setTimeout(() => reject(new Error('the calls did not settle within 60 s')), 60000);
  });
  const contexts = await Promise.race([sent, deadline]);
  const errors = contexts
    .map((ctx) => ctx.failedDelivery())
    .filter(Boolean)
    .map((failed) => `delivery failed: ${failed.reason}`);
  return { anonymousId: analytics.user().anonymousId(), errors };
};
