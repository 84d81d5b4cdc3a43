// The start page's "Stream events" button: server-sent events that read
// the session while the response streams. The script is a file of the app,
// not inline, because the Content-Security-Policy allows scripts from the
// app's own origin only.
"use strict";

const button = document.getElementById("stream");
if (button) {
	button.addEventListener("click", () => {
		const list = document.getElementById("events");
		list.replaceChildren();
		const es = new EventSource("/events");
		es.onmessage = (e) => {
			const li = document.createElement("li");
			li.textContent = e.data;
			list.append(li);
		};
		es.addEventListener("end", () => es.close()); // else EventSource reconnects
		es.onerror = () => es.close();
	});
}
