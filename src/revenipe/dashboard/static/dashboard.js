// Revenipe dashboard: the only script. Pages work without it; it only saves clicks.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // The app switcher goes as soon as an app is chosen (its Go button stays for no-script).
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => { if (select.value) select.form.submit(); });
  }
  for (const button of document.querySelectorAll("[data-hide-with-script]")) {
    button.classList.add("visually-hidden");
  }
  // Destructive actions ask first: <form data-confirm="Revoke this key?">.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
