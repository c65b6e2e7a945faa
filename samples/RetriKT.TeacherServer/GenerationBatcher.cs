using System.Threading.Channels;
using RetriKT.MLNet.Teacher;
using static TorchSharp.torch;

namespace RetriKT.TeacherServer;

/// <summary>Sampling settings of a request; the rows of one generation call share all of them but the temperature.</summary>
/// <param name="Temperature">0 = greedy.</param>
/// <param name="TopP">Nucleus mass; 1 disables.</param>
/// <param name="MaxTokens">Most new tokens.</param>
/// <param name="Stops">Stop sequences, joined by '\0' so the record compares by value.</param>
/// <param name="Seed">Explicit seed: such rows run alone so the seed means what it says.</param>
public sealed record SamplingKey(double Temperature, double TopP, int MaxTokens, string Stops, long? Seed)
{
    /// <summary>The stop sequences as a list (null when none).</summary>
    public IReadOnlyList<string>? StopList => Stops.Length == 0 ? null : Stops.Split('\0');
}

/// <summary>Log-probability of one generated token with the most probable alternatives at that position.</summary>
/// <param name="Token">The token's text as it appears in the output (leading space included).</param>
/// <param name="LogProb">Natural-log probability under the model (temperature 1, before top-p).</param>
/// <param name="Top">The <c>top_logprobs</c> most probable tokens at that position, most probable first.</param>
public sealed record TokenLogProb(string Token, float LogProb, IReadOnlyList<(string Token, float LogProb)> Top);

/// <summary>One finished row.</summary>
/// <param name="Text">Output text (a matched stop sequence is cut off, as OpenAI does).</param>
/// <param name="FinishReason">"stop" or "length".</param>
/// <param name="PromptTokens">Prompt length in tokens.</param>
/// <param name="CompletionTokens">Generated tokens.</param>
/// <param name="Tokens">Per-token log-probabilities when asked for, else null.</param>
public sealed record RowResult(string Text, string FinishReason, int PromptTokens, int CompletionTokens, IReadOnlyList<TokenLogProb>? Tokens);

/// <summary>
/// Dynamic batching: requests queue on a channel; one loop takes the first, waits <see cref="TeacherServerOptions.BatchWindowMs"/>
/// for more (up to <see cref="TeacherServerOptions.MaxBatchRows"/> rows, whole requests only), and runs one <see cref="TeacherModel.Generate"/>
/// call per group of rows with equal sampling settings but their temperatures (each row keeps its own). The teacher runs
/// on this one loop only, so N concurrent clients cost about one batched call instead of N sequential ones. Log-probabilities come from one extra forward
/// pass over prompt + output of the rows that asked for them.
/// </summary>
public sealed class GenerationBatcher : IAsyncDisposable
{
    // One request with its n rows: they are queued, batched and generated together, never split over two calls (a
    // seeded request split over two calls drew its seed twice: repeated choices, and answers that depended on what else
    // was queued). Number orders requests, so a seeded request's rows get a call of their own. Cancellation: the
    // client's (HttpContext.RequestAborted); a request whose client has left is not generated.
    private sealed record Pending(int[] PromptIds, SamplingKey Key, int N, int TopLogProbs, TaskCompletionSource<RowResult[]> Done, long Number, CancellationToken Cancellation);

    private readonly TeacherModel _teacher;
    private readonly TeacherServerOptions _options;
    private readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private long _calls, _rows, _requests, _abandoned, _generating;

    /// <summary>Starts the batching loop over a loaded teacher (the batcher owns it from now on).</summary>
    public GenerationBatcher(TeacherModel teacher, TeacherServerOptions options)
    {
        _teacher = teacher;
        _options = options;
        if (teacher.Tokenizer is null) throw new InvalidOperationException($"{options.ModelPath}: the teacher has no tokenizer; the server needs one to read prompts.");
        _loop = Task.Factory.StartNew(Loop, TaskCreationOptions.LongRunning).Unwrap();
    }

    /// <summary>The served teacher.</summary>
    public TeacherModel Teacher => _teacher;
    /// <summary>Generation calls made so far (one per batch and sampling group).</summary>
    public long Calls => Interlocked.Read(ref _calls);
    /// <summary>Rows generated so far.</summary>
    public long Rows => Interlocked.Read(ref _rows);
    /// <summary>
    /// Rows not generated because their client had gone (disconnected or cancelled): before their batch ran, or while it
    /// ran once every row of the call had lost its client.
    /// </summary>
    public long Abandoned => Interlocked.Read(ref _abandoned);
    /// <summary>Rows of the generation call running now (0 when the teacher is idle).</summary>
    public long Generating => Interlocked.Read(ref _generating);

    /// <summary>Encodes a prompt the way the teacher expects (BOS for the LLaMA family).</summary>
    public int[] Encode(string prompt) => _teacher.Tokenizer!.Encode(prompt, _teacher.Config.Architecture == TeacherArchitecture.Llama);

    /// <summary>
    /// Queues <paramref name="n"/> rows of one prompt; they are generated in one call (a request is never split over two)
    /// and complete when it is done. Once
    /// <paramref name="cancellation"/> fires, the task ends at once and rows still waiting are dropped before their batch
    /// runs. A generation call already running stops at its next token once every row in it has lost its client (rows of
    /// clients still waiting keep it going).
    /// </summary>
    /// <exception cref="ArgumentException">The prompt, with max_tokens, does not fit the teacher's context (thrown here, not by the task).</exception>
    public Task<RowResult[]> GenerateAsync(int[] promptIds, SamplingKey key, int n, int topLogProbs, CancellationToken cancellation)
    {
        if (promptIds.Length >= _teacher.Config.MaxPositions)
            throw new ArgumentException($"The prompt has {promptIds.Length} tokens; the model's context is {_teacher.Config.MaxPositions}.");
        // As OpenAI does; and a batch's rows all get their max_tokens only if every prompt leaves room for them (a long
        // prompt would otherwise shorten the completions of the other clients in its batch).
        if (promptIds.Length + key.MaxTokens > _teacher.Config.MaxPositions)
            throw new ArgumentException($"The prompt has {promptIds.Length} tokens and max_tokens is {key.MaxTokens}; together they must fit the " +
                                        $"model's context of {_teacher.Config.MaxPositions} tokens.");
        long number = Interlocked.Increment(ref _requests);
        var done = new TaskCompletionSource<RowResult[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_queue.Writer.TryWrite(new Pending(promptIds, key, n, topLogProbs, done, number, cancellation))) throw new ObjectDisposedException(nameof(GenerationBatcher));
        return done.Task.WaitAsync(cancellation);
    }

    private async Task Loop()
    {
        var reader = _queue.Reader;
        // A request that would take the batch past MaxBatchRows starts the next one (a request of more rows than that
        // runs in a call of its own).
        Pending? carried = null;
        try
        {
            while (carried is not null || await reader.WaitToReadAsync(_stop.Token))
            {
                var batch = new List<Pending>();
                int rows = 0;
                void Take(Pending p)
                {
                    if (batch.Count > 0 && rows + p.N > _options.MaxBatchRows) { carried = p; return; }
                    batch.Add(p);
                    rows += p.N;
                }
                if (carried is { } first) { carried = null; Take(first); }
                while (carried is null && rows < _options.MaxBatchRows && reader.TryRead(out var p)) Take(p);
                // The window: wait a little for the other clients of this moment, then generate them together.
                using (var window = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token))
                {
                    window.CancelAfter(Math.Max(0, _options.BatchWindowMs));
                    try
                    {
                        while (carried is null && rows < _options.MaxBatchRows && await reader.WaitToReadAsync(window.Token))
                            while (carried is null && rows < _options.MaxBatchRows && reader.TryRead(out var p)) Take(p);
                    }
                    catch (OperationCanceledException) when (!_stop.IsCancellationRequested) { }
                }
                // A client that left while its rows waited (the window, or the batches ahead of it) gets nothing from
                // them: generating them anyway would take the teacher's time and batch slots from clients still waiting.
                batch.RemoveAll(p =>
                {
                    if (!p.Cancellation.IsCancellationRequested) return false;
                    p.Done.TrySetCanceled(p.Cancellation);
                    Interlocked.Add(ref _abandoned, p.N);
                    return true;
                });
                // Equal sampling settings but the temperature share a call (each row keeps its own: the black-box extractor
                // jitters every request's); a seeded request's rows do not share theirs with another request, so its seed
                // gives what it gives alone.
                foreach (var group in batch.GroupBy(p => (p.Key with { Temperature = 0 }, p.Key.Seed is null ? 0 : p.Number))) Run(group.Key.Item1, group.ToList());
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested) { }
        carried?.Done.TrySetCanceled();
        while (reader.TryRead(out var left)) left.Done.TrySetCanceled();
    }

    private void Run(SamplingKey key, List<Pending> requests)
    {
        // The call is worth finishing while one of its clients still waits; when the last one leaves (or the server stops),
        // it stops at the next token.
        using var allGone = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        int waiting = requests.Count, rowCount = requests.Sum(r => r.N);
        var registrations = requests.Select(r => r.Cancellation.Register(() => { if (Interlocked.Decrement(ref waiting) == 0) allGone.Cancel(); })).ToList();
        Interlocked.Exchange(ref _generating, rowCount);
        try
        {
            var result = _teacher.Generate(new GenerationRequest
            {
                PromptIds = requests.SelectMany(r => Enumerable.Repeat(r.PromptIds, r.N)).ToList(),
                MaxNewTokens = key.MaxTokens, RowTemperatures = requests.SelectMany(r => Enumerable.Repeat(r.Key.Temperature, r.N)).ToList(), TopP = key.TopP,
                StopSequences = key.StopList, Seed = key.Seed, Cancellation = allGone.Token,
            });
            Interlocked.Increment(ref _calls);
            Interlocked.Add(ref _rows, rowCount);
            int row = 0;
            foreach (var r in requests)
            {
                var answers = new RowResult[r.N];
                for (int i = 0; i < r.N; i++) answers[i] = Answer(result.Sequences[row++], key, r.TopLogProbs);
                r.Done.TrySetResult(answers);
            }
        }
        catch (OperationCanceledException) when (allGone.IsCancellationRequested)
        {
            foreach (var r in requests) r.Done.TrySetCanceled(allGone.Token);
            if (!_stop.IsCancellationRequested) Interlocked.Add(ref _abandoned, rowCount);
        }
        catch (Exception e)
        {
            foreach (var r in requests) r.Done.TrySetException(e);
        }
        finally
        {
            // Before allGone is disposed: a registration's Dispose waits for a callback that is running.
            foreach (var registration in registrations) registration.Dispose();
            Interlocked.Exchange(ref _generating, 0);
        }
    }

    /// <summary>One generated row as the client gets it: the text after the prompt, cut before a stop sequence, with its tokens' log-probabilities when asked for.</summary>
    private RowResult Answer(GeneratedSequence s, SamplingKey key, int topLogProbs)
    {
        var text = Continuation(s.PromptIds, s.TokenIds) ?? s.Text;
        if (s.FinishReason == "stop_sequence" && key.StopList is { } stops)
        {
            // OpenAI returns the text before the first stop sequence, without it.
            int cut = stops.Select(stop => text.IndexOf(stop, StringComparison.Ordinal)).Where(at => at >= 0).DefaultIfEmpty(text.Length).Min();
            text = text[..cut];
        }
        var tokens = topLogProbs >= 0 ? UpTo(text, LogProbs(s.PromptIds, s.TokenIds, topLogProbs)) : null;
        return new RowResult(text, s.FinishReason == "length" ? "length" : "stop", s.PromptIds.Length, s.TokenIds.Length, tokens);
    }

    /// <summary>
    /// The tokens whose texts make up <paramref name="text"/>: a completion cut at a stop sequence drops the stop's tokens
    /// (and the stop's part of a token it starts inside), so the token texts concatenate to the returned text, as they do
    /// when streamed.
    /// </summary>
    private static IReadOnlyList<TokenLogProb> UpTo(string text, IReadOnlyList<TokenLogProb> tokens)
    {
        var kept = new List<TokenLogProb>(tokens.Count);
        int length = 0;
        foreach (var t in tokens)
        {
            if (length >= text.Length) break;
            kept.Add(t.Token.Length <= text.Length - length ? t : t with { Token = text[length..] });
            length += kept[^1].Token.Length;
        }
        return kept;
    }

    /// <summary>
    /// The output as it reads after the prompt (decoded together with the prompt, so a first piece's leading space is
    /// kept, as the per-token texts of <see cref="LogProbs"/> keep it; they concatenate to this). Null if decoding the
    /// prompt alone is not a prefix of decoding both (then the teacher's own decoding is used).
    /// </summary>
    private string? Continuation(int[] promptIds, int[] generated)
    {
        var tokenizer = _teacher.Tokenizer!;
        string prefix = tokenizer.Decode(promptIds), full = tokenizer.Decode([.. promptIds, .. generated]);
        return full.StartsWith(prefix, StringComparison.Ordinal) ? full[prefix.Length..] : null;
    }

    /// <summary>
    /// One forward pass over prompt + output gives, at each generated position, the token's log-probability and the
    /// top alternatives. A token's text is the decoded difference it makes after everything before it, so a piece's
    /// leading space survives (decoding a piece alone drops it for SentencePiece vocabularies).
    /// </summary>
    private List<TokenLogProb> LogProbs(int[] promptIds, int[] generated, int top)
    {
        var all = promptIds.Concat(generated).ToArray();
        var result = new List<TokenLogProb>(generated.Length);
        if (generated.Length == 0) return result;
        float[] chosen; long[] topIds; float[] topValues;
        int k = Math.Min(Math.Max(top, 1), _teacher.Config.VocabSize);
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var ids = tensor(all.Select(x => (long)x).ToArray(), new long[] { 1, all.Length });
            var logits = _teacher.Forward(_teacher.Embed(ids)).Logits[0].to(ScalarType.Float32);
            // Position t predicts token t + 1: the generated tokens are predicted from positions P-1 .. P+G-2.
            var logp = logits.narrow(0, promptIds.Length - 1, generated.Length).log_softmax(-1);
            var target = tensor(generated.Select(x => (long)x).ToArray(), device: logp.device).unsqueeze(1);
            chosen = logp.gather(1, target).squeeze(1).cpu().data<float>().ToArray();
            var (values, indices) = logp.topk(k, -1);
            topValues = values.cpu().data<float>().ToArray();
            topIds = indices.cpu().data<long>().ToArray();
        }
        var tokenizer = _teacher.Tokenizer!;
        for (int i = 0; i < generated.Length; i++)
        {
            var before = all.AsSpan(0, promptIds.Length + i).ToArray();
            var prefix = tokenizer.Decode(before);
            string Piece(int id)
            {
                var text = tokenizer.Decode([.. before, id]);
                return text.StartsWith(prefix, StringComparison.Ordinal) ? text[prefix.Length..] : tokenizer.Decode([id]);
            }
            var alternatives = new List<(string, float)>(top);
            for (int j = 0; j < top; j++) alternatives.Add((Piece((int)topIds[i * k + j]), topValues[i * k + j]));
            result.Add(new TokenLogProb(Piece(generated[i]), chosen[i], alternatives));
        }
        return result;
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        _stop.Cancel();
        try { await _loop; } catch (OperationCanceledException) { }
        _stop.Dispose();
        _teacher.Dispose();
    }
}
