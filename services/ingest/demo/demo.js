// The demo's agent-assist box: the reply the agent finally sends is captured as a correction
// of the AI's suggestion, then the two are shown side by side with a useful yes/no (replay).
(function () {
  var widget = window.feedbackloop;
  var form = document.getElementById("assist-form");
  if (!widget || !form) return;
  var field = document.getElementById("assist-reply");
  var suggestion = document.getElementById("assist-suggestion").textContent;
  var options = {
    responseId: form.getAttribute("data-feedbackloop-response-id"),
    token: form.getAttribute("data-feedbackloop-token"),
    suggestion: suggestion,
  };
  var correction = widget.captureCorrection(field, options);
  var replay = null;
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (correction) correction.send();
    if (replay) replay.destroy();
    replay = widget.mountReplay(document.getElementById("assist-replay"), {
      responseId: options.responseId,
      token: options.token,
      aiReply: suggestion,
      agentReply: field.value,
      message: document.querySelector(".ticket").textContent,
    });
  });
})();
