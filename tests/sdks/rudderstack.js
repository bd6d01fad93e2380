// The SDK matrix's visit with @rudderstack/analytics-js (the build with its plugins bundled), loaded
// with a local source config instead of its hosted control plane: a page (anonymous, the campaign
// in this page's utm_ query), an identify and an order, each at the visit's time.
window.sendVisit = ({ writeKey, dataPlaneUrl, visit }) =>
  new Promise((resolve, reject) => {
    setTimeout(() => reject(new Error('the SDK did not take the calls within 60 s')), 60000);
    const analytics = new rudderanalytics.RudderAnalytics();
    analytics.load(writeKey, dataPlaneUrl, {
      getSourceConfig: () => ({
        source: {
          id: 'touchline', name: 'touchline', workspaceId: 'touchline', enabled: true,
          config: {}, destinations: [],
        },
      }),
    });
    analytics.ready(() => {
      const taken = [];
      const done = (name) => () => {
        taken.push(name);
        if (taken.length === 3) resolve({ anonymousId: analytics.getAnonymousId(), errors: [] });
      };
      analytics.page('Site', 'Landing', {}, { originalTimestamp: visit.pageAt }, done('page'));
      analytics.identify(
        visit.userId, { email: visit.email }, { originalTimestamp: visit.identifyAt }, done('identify'),
      );
      analytics.track(
        'Order Completed',
        { order_id: visit.orderId, revenue: visit.revenue, currency: visit.currency },
        { originalTimestamp: visit.orderAt },
        done('track'),
      );
    });
  });
