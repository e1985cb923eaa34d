// veilpix console: the one script. It only lets a photo be dropped onto the lookup form;
// the form works without it (choose a file, press the button).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("photo");
  const form = document.getElementById("lookup-form");
  if (!zone || !input || !form) return;
  const over = (on) => (event) => {
    event.preventDefault();
    zone.classList.toggle("over", on);
  };
  zone.addEventListener("dragenter", over(true));
  zone.addEventListener("dragover", over(true));
  zone.addEventListener("dragleave", over(false));
  zone.addEventListener("drop", (event) => {
    over(false)(event);
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || files.length !== 1) return;
    input.files = files;
    form.requestSubmit();
  });
});
