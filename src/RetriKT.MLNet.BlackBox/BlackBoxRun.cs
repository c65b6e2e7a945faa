using System.ClientModel;
using System.Globalization;
using Microsoft.Extensions.AI;
using Polly;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;

namespace RetriKT.MLNet.BlackBox;

/// <summary>
/// One black-box extraction: workers (MaxConcurrency per endpoint) take the label furthest from its quota, send a
/// generation and a classification request through their endpoint's retry pipeline, and record the judged sample
/// under one lock (filters, counts, checkpoint, progress). A request that fails after its retries is put back, not
/// counted; its endpoint is taken out after MaxConsecutiveFailures such failures in a row.
/// </summary>
internal sealed class BlackBoxRun
{
    private sealed class Endpoint(TeacherEndpoint spec, string name, string? requestedModel)
    {
        public TeacherEndpoint Spec { get; } = spec;
        public string Name { get; } = name;
        /// <summary>The model every request to it asks for: ModelId, else the client's own (null when neither says).</summary>
        public string? RequestedModel { get; } = requestedModel;
        public ResiliencePipeline Pipeline { get; set; } = ResiliencePipeline.Empty;
        public int ConsecutiveFailures;
        /// <summary>Its last failure, on one line ("ClientResultException: HTTP 401 ..."), for the warning and the run's error.</summary>
        public string? LastError;
        public bool Out;
        public long Requests;
        /// <summary>The model the endpoint first answered as (guarded by the endpoint itself), and whether that was already named in a warning.</summary>
        public string? ServedModel;
        public bool ServedModelWarned;
        /// <summary>Whether an answer without token usage was already named in a warning (with a TokenBudget only).</summary>
        public bool UsageMissingWarned;
        /// <summary>Whether it refused a classification request for asking for log-probabilities (SoftLabels Auto then stops asking it).</summary>
        public volatile bool RefusesLogProbs;
    }

    private sealed record Draw(string Prompt, string Context, float Temperature);
    private sealed record Outcome(int Label, string Text, string? Text2, float[]? SoftLabel, string? Source, long Tokens, bool Finished);

    private readonly BlackBoxExtractorOptions _o;
    private readonly TaskTemplate _template;
    private readonly IReadOnlyList<string> _labels;
    private readonly List<PromptExample> _fewShot;
    private readonly ComponentHost _host;
    private readonly RunFingerprint _fingerprint;
    private readonly TeacherSoftLabels _softLabels;
    private readonly SampleJudge _judge;
    private readonly List<string>[] _demonstrations;
    private readonly List<string> _contexts;
    private readonly Random _random;
    private readonly int _maxAttempts;
    private readonly object _gate = new();
    private readonly List<KnowledgeEntry>[] _kept;
    private readonly int[] _generated, _attempts, _inFlight;
    private readonly IntendedLabelTally _intended;
    private readonly Dictionary<DropReason, int> _dropped = Enum.GetValues<DropReason>().ToDictionary(r => r, _ => 0);
    private readonly List<string> _takenOut = [];
    private List<Endpoint> _endpoints = [];
    private readonly CancellationTokenSource _cancel;
    private long _tokens, _requests, _retries, _failedRequests;
    private int _fromLogProbs, _fromClassification, _unlabelled, _resumed;
    private bool _stoppedByBudget;

    public BlackBoxRun(BlackBoxExtractorOptions options, TaskTemplate template, IReadOnlyList<string> labels, List<PromptExample> fewShot, ComponentHost host, RunFingerprint fingerprint)
    {
        _o = options; _template = template; _labels = labels; _fewShot = fewShot; _host = host; _fingerprint = fingerprint;
        var words = labels.Select(l => template.Verbalizer[l]).ToList();
        _softLabels = new TeacherSoftLabels(labels, words, options.AnswerConfidence);
        _judge = new SampleJudge(template, options.MinWords ?? template.MinWords, options.MaxWords, options.FidelityThreshold, options.RequireArgmax, options.NearDuplicateThreshold, options.DropUnfinished);
        foreach (var e in fewShot) _judge.Duplicates.Admit(template.RenderTarget(e.Text, e.Text2));
        _demonstrations = labels.Select((_, l) => fewShot.Where(e => e.Label == l).Select(e => template.RenderContext(e.Text) + template.RenderTarget(e.Text, e.Text2)).ToList()).ToArray();
        _contexts = fewShot.Select(e => e.Text).Concat(options.ContextTexts ?? []).Distinct().ToList();
        _random = new Random(host.Seed);
        _maxAttempts = KnowledgeExtractorOptions.MostAttempts(options.SamplesPerLabel, options.MaxAttemptsFactor);
        _kept = labels.Select(_ => new List<KnowledgeEntry>()).ToArray();
        _intended = new IntendedLabelTally(labels);
        _generated = new int[labels.Count]; _attempts = new int[labels.Count]; _inFlight = new int[labels.Count];
        // Cancelled by the caller's token, or by the run itself when the MLContext is cancelled during a progress report.
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(options.CancellationToken);
    }

    public async Task<(KnowledgeStore Store, BlackBoxExtractionReport Report)> RunAsync()
    {
        // Released however the run ends: a checkpoint refused below left the link registered on the caller's token.
        using var cancel = _cancel;
        using var checkpoint = new BlackBoxCheckpoint(_o.CheckpointPath, _fingerprint, _labels);
        foreach (var r in checkpoint.Resumed) Replay(r);
        _resumed = checkpoint.Resumed.Count(r => !r.Failed);
        if (_resumed > 0) _host.Info($"Resumed {_resumed} judged samples ({_kept.Sum(k => k.Count)} kept) from {checkpoint.Path}.");

        var endpoints = _endpoints = _o.Teachers.Select((t, i) => new Endpoint(t, t.Name ?? $"teacher-{i + 1}", _o.ModelId ?? t.ClientModel)).ToList();
        foreach (var e in endpoints) e.Pipeline = EndpointResilience.Create(_o, (failure, wait, retry) => WaitingToRetry(e, failure, wait, retry));
        var workers = endpoints.SelectMany(e => Enumerable.Range(0, e.Spec.MaxConcurrency).Select(_ => Task.Run(() => Worker(e, checkpoint)))).ToList();
        await Task.WhenAll(workers).ConfigureAwait(false);
        _host.CheckAlive();
        if (endpoints.All(e => e.Out) && NeedsMore())
            throw new InvalidOperationException($"All {endpoints.Count} teacher endpoints were taken out after failing {_o.MaxConsecutiveFailures} requests in a row " +
                $"({string.Join("; ", endpoints.Select(e => $"{e.Name}, last: {e.LastError}"))}); " +
                $"{_kept.Sum(k => k.Count)} samples were kept{(checkpoint.Path is null ? "" : $" and are in {checkpoint.Path}; fix the endpoints and run again to resume")}.");
        // Samples the teacher gave no label are dropped one by one as LowFidelity; when they are most of the run, the cause
        // is the endpoint or the prompt, not the filters, and the per-label warnings below must not send the user there.
        int judged = _generated.Sum();
        bool mostUnlabelled = _unlabelled > 0 && 2 * _unlabelled >= judged;
        if (mostUnlabelled)
            _host.Warning($"{_unlabelled} of {judged} judged samples got no soft label and were dropped as LowFidelity: " + (_o.SoftLabels == SoftLabelSource.LogProbs
                ? "SoftLabels is LogProbs and the endpoints returned no log-probabilities that begin a label word (an endpoint without them, such as Ollama, needs SoftLabels Auto or ClassifyAndMap)."
                : "the classification answers did not begin with a label word or name (see ClassificationPrompt and ClassificationMaxTokens)."));
        // The same for answers with no text: no filter setting brings them back, so the per-label warnings must not point there.
        int empty = _dropped[DropReason.Empty];
        bool mostEmpty = !mostUnlabelled && empty > 0 && 2 * empty >= judged;
        if (mostEmpty)
            _host.Warning($"{empty} of {judged} judged samples came back empty and were dropped as Empty: the endpoints answered the generation requests with no text " +
                "(a reply that begins with a stop sequence, such as the default newline: see StopSequences and GenerationPrompt; or one the endpoint's content filter withheld).");
        for (int l = 0; l < _labels.Count; l++)
            if (_kept[l].Count < _o.SamplesPerLabel)
                _host.Warning($"Label '{_labels[l]}': kept {_kept[l].Count} of {_o.SamplesPerLabel} wanted samples after {_generated[l]} generated" +
                    (_stoppedByBudget ? " (token budget reached)."
                        : mostUnlabelled ? " (most samples got no soft label from the teacher, see above)."
                        : mostEmpty ? " (most samples came back empty, see above)." : " (raise MaxAttemptsFactor or relax the filters)."));

        _intended.WarnWhereTheTeacherIgnoresTheLabel(_host);

        var entries = ExtractionReport.BalancedEntries(_fewShot, _o.IncludeFewShot, _labels.Count, _kept);
        var extraction = ExtractionReport.Create(_template, _labels, _generated, _kept, _dropped, _o.IncludeFewShot ? _fewShot.Count : 0, _resumed, _intended);
        var report = new BlackBoxExtractionReport(extraction, _requests, _retries, _tokens, _fromLogProbs, _fromClassification, _unlabelled,
            endpoints.ToDictionary(e => e.Name, e => e.Requests), _takenOut.ToList(), _stoppedByBudget);
        return (new KnowledgeStore(_labels, entries), report);
    }

    private async Task Worker(Endpoint endpoint, BlackBoxCheckpoint checkpoint)
    {
        var ct = _cancel.Token;
        while (!ct.IsCancellationRequested)
        {
            int label;
            Draw? draw = null;
            lock (_gate)
            {
                if (endpoint.Out) return;
                if (_o.TokenBudget is long budget && Interlocked.Read(ref _tokens) >= budget) { _stoppedByBudget = true; return; }
                label = NextLabel();
                if (label < 0 && _inFlight.Sum() == 0) return;
                if (label >= 0) { _inFlight[label]++; _attempts[label]++; draw = NewDraw(label); }
            }
            if (draw is null)
            {
                // Every open label has enough requests in flight; one of them may still be dropped, so wait and look again.
                try { await Task.Delay(20, ct).ConfigureAwait(false); } catch (OperationCanceledException) { return; }
                continue;
            }
            Outcome outcome;
            try { outcome = await Attempt(endpoint, label, draw, ct).ConfigureAwait(false); }
            catch (Exception) when (ct.IsCancellationRequested)
            {
                lock (_gate) { _inFlight[label]--; _attempts[label]--; }
                return;
            }
            catch (Exception e)
            {
                lock (_gate)
                {
                    _inFlight[label]--; _attempts[label]--; // put back: another request (maybe on another endpoint) makes it up
                    // Its draw was made, and its generation may have been billed: a resumed run replays both.
                    checkpoint.Append(CheckpointRecord.FailedRequest(label, (e as RequestFailure)?.TokensBefore ?? 0));
                    _failedRequests++;
                    endpoint.LastError = e is RequestFailure ? e.Message : OneLine(e);
                    if (++endpoint.ConsecutiveFailures >= _o.MaxConsecutiveFailures && !endpoint.Out)
                    {
                        endpoint.Out = true;
                        _takenOut.Add(endpoint.Name);
                        _host.Warning($"Teacher endpoint '{endpoint.Name}' taken out after {endpoint.ConsecutiveFailures} failed requests in a row; last: {endpoint.LastError}");
                    }
                    // Progress is reported for failures too: a run whose requests all fail (or wait on retries) showed
                    // nothing at all until it ended.
                    try { Progress(); }
                    catch (OperationCanceledException) { _cancel.Cancel(); return; }
                }
                continue;
            }
            lock (_gate)
            {
                _inFlight[label]--;
                endpoint.ConsecutiveFailures = 0;
                var record = Judge(outcome);
                checkpoint.Append(record);
                try { Progress(); }
                catch (OperationCanceledException) { _cancel.Cancel(); return; }
            }
        }
    }

    /// <summary>
    /// Counts a retry and names its wait as it begins, with the progress: a long Retry-After (a rate limit's 30 s, say)
    /// showed nothing, neither progress nor a line, until its request ended, and the run looked hung.
    /// </summary>
    private void WaitingToRetry(Endpoint endpoint, Exception? failure, TimeSpan wait, int retry)
    {
        Interlocked.Increment(ref _retries);
        lock (_gate)
        {
            // Cancelled here (the MLContext), the run's token ends the wait that follows at once.
            try { Progress(); }
            catch (OperationCanceledException) { _cancel.Cancel(); return; }
            _host.Info(string.Create(CultureInfo.InvariantCulture,
                $"Teacher endpoint '{endpoint.Name}' waits {wait.TotalSeconds:0.#} s for retry {retry} of {_o.MaxRetries} after {(failure is null ? "a failed attempt" : OneLine(failure))}"));
        }
    }

    /// <summary>The open label furthest from its quota (kept + in flight), or -1.</summary>
    private int NextLabel()
    {
        int best = -1;
        for (int l = 0; l < _labels.Count; l++)
        {
            int have = _kept[l].Count + _inFlight[l];
            if (have >= _o.SamplesPerLabel || _attempts[l] >= _maxAttempts) continue;
            if (best < 0 || have < _kept[best].Count + _inFlight[best]) best = l;
        }
        return best;
    }

    private bool NeedsMore() => Enumerable.Range(0, _labels.Count).Any(l => _kept[l].Count < _o.SamplesPerLabel && _attempts[l] < _maxAttempts);

    private Draw NewDraw(int label)
    {
        var pool = _demonstrations[label];
        var picked = pool.OrderBy(_ => _random.Next()).Take(_o.DemonstrationsPerRequest).ToList();
        string context = _template.Target == GenerationTarget.SecondPart && _contexts.Count > 0 ? _contexts[_random.Next(_contexts.Count)] : "";
        float temperature = Math.Max(0f, _o.Temperature + (float)(2 * _random.NextDouble() - 1) * _o.TemperatureJitter);
        var words = _labels.Select(l => _template.Verbalizer[l].Trim());
        var prompt = _o.GenerationPrompt
            .Replace("{label}", _template.Verbalizer[_labels[label]].Trim())
            .Replace("{labels}", string.Join(", ", words))
            .Replace("{examples}", string.Join("\n", picked))
            .Replace("{context}", _template.Target == GenerationTarget.SecondPart ? _template.RenderContext(context) : "");
        return new Draw(prompt, context, temperature);
    }

    private async Task<Outcome> Attempt(Endpoint endpoint, int label, Draw draw, CancellationToken ct)
    {
        var generation = await Call(endpoint, $"generation request for label '{_labels[label]}'", draw.Prompt, new ChatOptions
        {
            Temperature = draw.Temperature, TopP = _o.TopP, MaxOutputTokens = _o.MaxOutputTokens ?? _template.MaxNewTokens,
            StopSequences = _o.StopSequences.ToList(), ModelId = _o.ModelId,
        }, ct).ConfigureAwait(false);
        long tokens = generation.Usage?.TotalTokenCount ?? 0;
        var (text, text2) = _template.SplitGenerated(draw.Context, generation.Text ?? "");
        // Cut off at the token limit, or where the endpoint's content filter stepped in: either way the text stops mid-sample.
        bool finished = generation.FinishReason != ChatFinishReason.Length && generation.FinishReason != ChatFinishReason.ContentFilter;
        if (!SampleJudge.HasText(_template, text, text2))
            return new Outcome(label, text, text2, null, null, tokens, finished); // nothing to classify: judged Empty
        if (!finished && _o.DropUnfinished)
            return new Outcome(label, text, text2, null, null, tokens, finished); // cut off at the token limit: judged Unfinished, no classification spent on it

        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = _o.ClassificationMaxTokens, ModelId = _o.ModelId };
        bool askForLogProbs = _o.SoftLabels == SoftLabelSource.LogProbs || (_o.SoftLabels == SoftLabelSource.Auto && !endpoint.RefusesLogProbs);
        if (askForLogProbs) TeacherSoftLabels.AskForLogProbs(options, endpoint.Spec.Client, _o.TopLogProbs);
        var prompt = _o.ClassificationPrompt
            .Replace("{labels}", string.Join(", ", _labels.Select(l => _template.Verbalizer[l].Trim())))
            .Replace("{classification}", _template.ClassificationParts(text, text2).Prefix);
        var request = $"classification request for label '{_labels[label]}'";
        ChatResponse classification;
        try
        {
            try { classification = await Call(endpoint, request, prompt, options, ct).ConfigureAwait(false); }
            catch (RequestFailure refused) when (_o.SoftLabels == SoftLabelSource.Auto && options.RawRepresentationFactory is not null && IsInvalidRequest(refused.InnerException))
            {
                // Several providers and local servers answer 400 to logprobs/top_logprobs; Auto means classify-and-map there.
                // Asked again without them: when that fails too, the request was refused for something else and fails as such.
                options.RawRepresentationFactory = null;
                classification = await Call(endpoint, request, prompt, options, ct).ConfigureAwait(false);
                StopAskingForLogProbs(endpoint, refused);
            }
        }
        catch (RequestFailure failure) { failure.TokensBefore = tokens; throw; } // the generation was billed all the same
        tokens += classification.Usage?.TotalTokenCount ?? 0;
        if (_o.SoftLabels != SoftLabelSource.ClassifyAndMap && _softLabels.FromLogProbs(classification) is { } p)
            return new Outcome(label, text, text2, p, "logprobs", tokens, finished);
        if (_o.SoftLabels != SoftLabelSource.LogProbs && _softLabels.FromAnswer(classification.Text) is { } q)
            return new Outcome(label, text, text2, q, "classify", tokens, finished);
        return new Outcome(label, text, text2, null, null, tokens, finished);
    }

    /// <summary>A request the endpoint refused as invalid (400, or 422 from servers that validate requests by schema).</summary>
    private static bool IsInvalidRequest(Exception? e) => e is ClientResultException { Status: 400 or 422 };

    /// <summary>
    /// Takes log-probabilities out of an endpoint's classification requests (SoftLabels Auto) once it refused them, and says
    /// so once: its samples are labelled by classify-and-map from then on, and the report counts them apart.
    /// </summary>
    private void StopAskingForLogProbs(Endpoint endpoint, RequestFailure refused)
    {
        lock (endpoint)
        {
            if (endpoint.RefusesLogProbs) return;
            endpoint.RefusesLogProbs = true;
        }
        lock (_gate) _host.Warning($"Teacher endpoint '{endpoint.Name}' refused log-probabilities ({OneLine(refused.InnerException!)}); " +
            "SoftLabels is Auto, so its classification requests go on without them and its samples are labelled by classify-and-map.");
    }

    /// <summary>
    /// A request that still failed after its retries, named with what it asked for: an endpoint's last error used to give
    /// only the client's exception (for a 200 with no choices, "ArgumentOutOfRangeException: Index was out of range"),
    /// not which request of which label met it.
    /// </summary>
    private sealed class RequestFailure(string request, Exception inner) : Exception($"{request}: {OneLine(inner)}", inner)
    {
        /// <summary>Tokens the attempt had been billed before this request (its generation, when the classification failed).</summary>
        public long TokensBefore { get; set; }
    }

    /// <summary>An exception as one line: its type and its message with the line breaks taken out.</summary>
    private static string OneLine(Exception e) =>
        $"{e.GetType().Name}: {string.Join(' ', e.Message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))}";

    private async Task<ChatResponse> Call(Endpoint endpoint, string request, string prompt, ChatOptions options, CancellationToken ct)
    {
        ChatResponse response;
        try
        {
            response = await endpoint.Pipeline.ExecuteAsync(
                async token => await endpoint.Spec.Client.GetResponseAsync([new ChatMessage(ChatRole.User, prompt)], options, token).ConfigureAwait(false),
                ct).ConfigureAwait(false);
        }
        catch (Exception e) when (!ct.IsCancellationRequested) { throw new RequestFailure(request, e); }
        Interlocked.Increment(ref _requests);
        Interlocked.Increment(ref endpoint.Requests);
        // Counted as reported, not with the judged sample: a generation whose classification then fails is billed all the
        // same, and dropping its tokens with the sample let TokenBudget be overspent and TokensUsed fall short.
        Interlocked.Add(ref _tokens, response.Usage?.TotalTokenCount ?? 0);
        if (response.Usage?.TotalTokenCount is null && _o.TokenBudget is long budget) WarnUsageMissing(endpoint, budget);
        CheckServedModel(endpoint, response.ModelId);
        return response;
    }

    /// <summary>
    /// Warns once per endpoint when it answers as another model than the one asked for, or as another model than it
    /// first answered as: a misrouted deployment or a proxy in front of several models fills the store with another
    /// teacher's samples, which look as valid as the rest. A warning, not an error: a snapshot ("gpt-4o-mini" answered as
    /// "gpt-4o-mini-2024-07-18"), a tag ("llama3" as "llama3:latest") or a deployment name are the same model.
    /// </summary>
    private void CheckServedModel(Endpoint endpoint, string? served)
    {
        if (served is null) return;
        string? message = null;
        lock (endpoint)
        {
            if (endpoint.ServedModelWarned) return;
            if (endpoint.ServedModel is null)
            {
                endpoint.ServedModel = served;
                if (endpoint.RequestedModel is { } requested && !SameModel(requested, served))
                    message = $"Teacher endpoint '{endpoint.Name}' was asked for model '{requested}' and answered as '{served}': unless that is the same model under another name, its samples are another teacher's.";
            }
            else if (!string.Equals(endpoint.ServedModel, served, StringComparison.OrdinalIgnoreCase))
                message = $"Teacher endpoint '{endpoint.Name}' answered as model '{endpoint.ServedModel}' and later as '{served}': the store mixes two teachers' samples.";
            if (message is not null) endpoint.ServedModelWarned = true;
        }
        if (message is not null) lock (_gate) _host.Warning(message); // with the run's other warnings, one at a time
    }

    /// <summary>
    /// Warns once per endpoint that answers without token usage while a TokenBudget is set: its requests count nothing
    /// towards the budget, which then cannot stop the run, and it did so without a word.
    /// </summary>
    private void WarnUsageMissing(Endpoint endpoint, long budget)
    {
        lock (endpoint)
        {
            if (endpoint.UsageMissingWarned) return;
            endpoint.UsageMissingWarned = true;
        }
        lock (_gate) _host.Warning($"Teacher endpoint '{endpoint.Name}' answers without token usage: its requests count nothing towards TokenBudget ({budget}), so the budget does not limit them.");
    }

    private static bool SameModel(string requested, string served) =>
        served.Equals(requested, StringComparison.OrdinalIgnoreCase)
        || (served.Length > requested.Length && served.StartsWith(requested, StringComparison.OrdinalIgnoreCase) && served[requested.Length] is '-' or ':');

    /// <summary>Applies the shared filters to a new sample (caller holds the lock) and returns what the checkpoint keeps.</summary>
    private CheckpointRecord Judge(Outcome s)
    {
        _generated[s.Label]++;
        DropReason? reason;
        if (s.SoftLabel is null)
        {
            // Unlabelled: an empty or cut-off sample is judged Empty or Unfinished by the filters; a sample the teacher gave no label is LowFidelity.
            reason = _judge.JudgeUnlabelled(s.Text, s.Text2, s.Finished) ?? DropReason.LowFidelity;
            if (reason == DropReason.LowFidelity) _unlabelled++;
        }
        else
        {
            Count(s.Source);
            _intended.Add(s.Label, s.SoftLabel);
            reason = _judge.Judge(s.Text, s.Text2, s.SoftLabel, s.Label, s.Finished, labelFull: _kept[s.Label].Count >= _o.SamplesPerLabel);
        }
        if (reason is { } r) _dropped[r]++;
        else _kept[s.Label].Add(new KnowledgeEntry(s.Text, s.Text2, s.Label, s.SoftLabel!, s.SoftLabel![s.Label], KnowledgeSource.Generated));
        return new CheckpointRecord(s.Label, s.Text, s.Text2, s.SoftLabel, s.Source, reason, s.Tokens);
    }

    /// <summary>Restores a checkpointed decision as it was made (the fingerprint guarantees the same filters).</summary>
    private void Replay(CheckpointRecord r)
    {
        // The draw its request was made with: the resumed run goes on where the draws left off instead of repeating the
        // first requests (with one request in flight at a time, exactly where an uninterrupted run would be).
        NewDraw(r.Label);
        if (r.Failed)
        {
            _tokens += r.Tokens; // a request that failed after its retries: its draw, and what its attempt was billed
            return;
        }
        _generated[r.Label]++;
        _attempts[r.Label]++;
        _tokens += r.Tokens;
        Count(r.Source);
        if (r.SoftLabel is not null) _intended.Add(r.Label, r.SoftLabel);
        if (r.Source is null && r.Dropped == DropReason.LowFidelity) _unlabelled++;
        if (r.Dropped is { } d) { _dropped[d]++; return; }
        _judge.Duplicates.Admit(_template.RenderTarget(r.Text, r.Text2));
        _kept[r.Label].Add(new KnowledgeEntry(r.Text, r.Text2, r.Label, r.SoftLabel!, r.SoftLabel![r.Label], KnowledgeSource.Generated));
    }

    private void Count(string? source)
    {
        if (source == "logprobs") _fromLogProbs++;
        else if (source == "classify") _fromClassification++;
    }

    private void Progress()
    {
        var metrics = new Dictionary<string, double>
        {
            ["requests"] = Interlocked.Read(ref _requests), ["retries"] = Interlocked.Read(ref _retries), ["failed"] = _failedRequests,
            ["tokens"] = Interlocked.Read(ref _tokens), ["generated"] = _generated.Sum(),
        };
        for (int l = 0; l < _labels.Count; l++) metrics[$"kept:{_labels[l]}"] = _kept[l].Count;
        foreach (var e in _endpoints) metrics[$"requests:{e.Name}"] = Interlocked.Read(ref e.Requests);
        _host.Report("BlackBoxExtraction", _kept.Sum(k => k.Count), (long)_o.SamplesPerLabel * _labels.Count, metrics);
    }
}
