// Swagger UI for /api/v1/openapi.json. "Authorize" takes the X-API-Key; nothing is fetched
// from another host (no validator badge, no remote configuration).
window.ui = SwaggerUIBundle({
  url: "/api/v1/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  persistAuthorization: false,
  displayRequestDuration: true,
  docExpansion: "list",
  tagsSorter: "alpha",
});
