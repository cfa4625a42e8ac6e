// Starts Swagger UI on /api/docs over ragd's OpenAPI document. A file and
// not an inline script, so that the page's Content-Security-Policy allows
// no inline script; nothing here reaches another origin (no validator
// badge, no remote config).
window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,
  configUrl: null,
  tryItOutEnabled: false,
});
