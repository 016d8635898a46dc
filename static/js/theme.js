// Loaded in <head>, before the stylesheet paints: apply the theme the toggle stored.
// Without a stored choice the CSS follows prefers-color-scheme.
(function () {
  try {
    var theme = localStorage.getItem("nslab-theme");
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  } catch (e) { /* storage blocked: follow the system */ }
})();
