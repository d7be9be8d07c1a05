/* /api/docs: Swagger UI over the app's own OpenAPI document.
 * A file rather than inline code: the pages' Content-Security-Policy runs scripts from
 * 'self' only. validatorUrl null: no call to a validator on another host. */
"use strict";

window.ui = window.SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [window.SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
