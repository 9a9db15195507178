// Answers as GoTrue sends them (sendJSON): JSON, and for redirects a 303 See Other.
export function json(body: unknown, status = 200, headers: HeadersInit = {}): Response {
  const h = new Headers(headers);
  h.set('content-type', 'application/json');
  return new Response(JSON.stringify(body), { status, headers: h });
}

export function noContent(): Response {
  return new Response(null, { status: 204 });
}

export function redirect(location: string): Response {
  return new Response(null, { status: 303, headers: { location } });
}
