using System.Security.Cryptography;
using System.Text;
using RetriKT.MLNet.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Teacher;

/// <summary>How to load or create a teacher.</summary>
public sealed class TeacherLoadOptions
{
    /// <summary>Device for every tensor of the model. Null: CPU. Use <c>TorchDevices.Resolve</c> to honour MLContext.GpuDeviceId.</summary>
    public Device? Device { get; init; }
    /// <summary>Parameter dtype (float32, float16 or bfloat16); checkpoints are converted on load. Default float32.</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;
    /// <summary>Tokenizer file or folder. Null: look beside the checkpoint (see <see cref="TeacherTokenizer.Load"/>).</summary>
    public string? TokenizerPath { get; init; }
    /// <summary>Parameters require gradients (for pretraining/fine-tuning). Default false: a frozen teacher, whose
    /// <see cref="TeacherModel.Forward"/> still passes gradients to the input embeddings.</summary>
    public bool Trainable { get; init; }
}

/// <summary>
/// A causal LLM used as the RetriKT teacher: LLaMA family (LLaMA-2/3, Mistral, Qwen2, llama2.c) or GPT-2, in TorchSharp.
/// Load from a Hugging Face directory or a llama2.c <c>.bin</c>; generate (KV cache, batching with left padding,
/// sampling, soft-prompt prefix, per-token log-probs); score continuations; run a differentiable forward pass from
/// input embeddings; save as HF safetensors. Inference runs in eval mode under no_grad with a dispose scope per step.
/// </summary>
public sealed class TeacherModel : IDisposable
{
    private readonly CausalLMModule _module;
    private string? _contentHash;
    // Every public use of the weights holds a use of this guard: Dispose freed them under another thread's forward pass,
    // and the managed decoding steps, which read the parameters' storage by address, went on generating from freed memory.
    private readonly SharedUseGuard _use = new();

    private TeacherModel(CausalLMModule module, TeacherConfig config, TeacherTokenizer? tokenizer, Device device, ScalarType dtype, bool trainable)
    {
        _module = module; Config = config; Tokenizer = tokenizer; Device = device; DType = dtype;
        RequiresGrad = trainable;
        _module.eval();
    }

    /// <summary>The full path <see cref="Load"/> read this teacher from; null for one created in memory.</summary>
    internal string? SourcePath { get; private init; }

    /// <summary>The model's shape and special ids.</summary>
    public TeacherConfig Config { get; }
    /// <summary>The tokenizer, or null when the checkpoint came without one (then only id-based calls work).</summary>
    public TeacherTokenizer? Tokenizer { get; }
    /// <summary>Device holding every parameter.</summary>
    public Device Device { get; }
    /// <summary>Parameter dtype.</summary>
    public ScalarType DType { get; }
    /// <summary>Number of parameters (a tied head counted once).</summary>
    public long ParameterCount
    {
        get
        {
            using var use = _use.Enter(nameof(TeacherModel));
            return _module.parameters().Sum(p => p.numel());
        }
    }

    /// <summary>Whether parameters take gradients (true for pretraining, false for a frozen teacher).</summary>
    public bool RequiresGrad
    {
        get { using var use = _use.Enter(nameof(TeacherModel)); return _module.parameters().FirstOrDefault()?.requires_grad ?? false; }
        set { using var use = _use.Enter(nameof(TeacherModel)); foreach (var p in _module.parameters()) p.requires_grad = value; }
    }

    /// <summary>The parameters, named as in Hugging Face checkpoints (for optimizers).</summary>
    public IEnumerable<(string Name, Parameter Parameter)> NamedParameters() => Module.named_parameters();

    // The training paths (soft prompts, PPO, pretraining) that drive the module themselves.
    internal CausalLMModule Module => _use.IsReleased ? throw new ObjectDisposedException(nameof(TeacherModel)) : _module;

    /// <summary>
    /// SHA-256 (hex) over the canonical config JSON and every parameter (name, dtype, shape, bytes, sorted by name): a
    /// stable identity for "these weights with this config", independent of file format and path. Computed on first use
    /// and again after training changed the weights.
    /// </summary>
    public string ContentHash => _contentHash ??= ComputeHash();

    internal void InvalidateContentHash() => _contentHash = null;

    // ------------------------------------------------------------------------------------------ loading and saving

    /// <summary>
    /// Loads a teacher from a Hugging Face directory (config.json + model.safetensors, or a sharded
    /// model.safetensors.index.json) or a llama2.c <c>.bin</c> checkpoint. The tokenizer is taken from
    /// <see cref="TeacherLoadOptions.TokenizerPath"/> or found beside the checkpoint (for llama2.c: tokenizer.bin or
    /// tok{vocab}.bin in the same folder). A folder saved by <see cref="SaveCheckpoint"/> records its tokenizer's hash in
    /// config.json, and any other tokenizer (given or found in the folder) is refused, whatever its size.
    /// </summary>
    /// <exception cref="FileNotFoundException">A required file is missing.</exception>
    /// <exception cref="InvalidDataException">A file is truncated, a tensor is missing or has the wrong shape, or the tokenizer does not fit the vocabulary or is not the one the checkpoint was saved with.</exception>
    /// <exception cref="NotSupportedException">The checkpoint uses an architecture or option outside what is implemented.</exception>
    public static TeacherModel Load(string path, TeacherLoadOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= new TeacherLoadOptions();
        TorchDevices.EnsureNativeBackend();
        var device = options.Device ?? CPU;
        CheckDType(options.DType);
        CausalLMModule module; TeacherConfig config; string? tokenizerPath = options.TokenizerPath, savedTokenizerHash = null;
        bool llama2c = false;
        if (Directory.Exists(path))
        {
            if (!File.Exists(Path.Combine(path, TeacherCheckpoints.ConfigFile)))
                throw new FileNotFoundException($"{path}: not a Hugging Face model directory (config.json is missing).", Path.Combine(path, TeacherCheckpoints.ConfigFile));
            (module, config) = TeacherCheckpoints.LoadHuggingFace(path, options.DType, device);
            tokenizerPath ??= HasTokenizer(path) ? path : null;
            try { savedTokenizerHash = TeacherCheckpoints.SavedTokenizerHash(path); }
            catch { module.Dispose(); throw; }
        }
        else if (File.Exists(path))
        {
            (module, config) = TeacherCheckpoints.LoadLlama2c(path, options.DType, device);
            llama2c = true;
            var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
            tokenizerPath ??= new[] { "tokenizer.bin", $"tok{config.VocabSize}.bin" }.Select(f => Path.Combine(dir, f)).FirstOrDefault(File.Exists);
        }
        else throw new FileNotFoundException($"Teacher checkpoint not found: {path}", path);

        try
        {
            var tokenizer = tokenizerPath is null ? null : TeacherTokenizer.Load(tokenizerPath);
            if (tokenizer is not null)
            {
                CheckTokenizerFits(tokenizer, config, tokenizerPath!);
                if (savedTokenizerHash is not null && tokenizer.ContentHash != savedTokenizerHash)
                    throw new InvalidDataException($"{tokenizerPath}: expected the tokenizer {path} was saved with (sha256 {savedTokenizerHash[..12]}…, " +
                        $"'{TeacherCheckpoints.TokenizerHashField}' in {TeacherCheckpoints.ConfigFile}), found another ({tokenizer.VocabSize} tokens, sha256 {tokenizer.ContentHash[..12]}…), " +
                        "whose ids mean other tokens to the model; use the tokenizer saved with it.");
                // llama2.c writes a tokenizer of exactly its model's vocabulary: one of another size is another model's.
                if (llama2c && tokenizer.VocabSize != config.VocabSize)
                    throw new InvalidDataException($"{tokenizerPath}: the tokenizer has {tokenizer.VocabSize} tokens, but the llama2.c checkpoint {path} has a vocabulary of {config.VocabSize}; they do not belong together.");
            }
            return new TeacherModel(module, config, tokenizer, device, options.DType, options.Trainable) { SourcePath = Path.GetFullPath(path) };
        }
        catch { module.Dispose(); throw; }
    }

    /// <summary>Creates a randomly initialised teacher (for pretraining from scratch). Same seed, same weights.</summary>
    public static TeacherModel Create(TeacherConfig config, TeacherTokenizer? tokenizer, int seed = 1, TeacherLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        options ??= new TeacherLoadOptions { Trainable = true };
        TorchDevices.EnsureNativeBackend();
        CheckDType(options.DType);
        config.Validate();
        if (tokenizer is not null) CheckTokenizerFits(tokenizer, config, "tokenizer");
        var device = options.Device ?? CPU;
        var module = TeacherCheckpoints.Create(config, options.DType, device);
        using (var gen = new Generator((ulong)seed)) module.InitializeWeights(gen);
        return new TeacherModel(module, config, tokenizer, device, options.DType, options.Trainable);
    }

    /// <summary>
    /// Writes a Hugging Face directory that <see cref="Load"/> reads back: config.json, model.safetensors and the
    /// tokenizer's files, with the tokenizer's hash in config.json (<see cref="Load"/> refuses any other tokenizer for these
    /// weights). Each file is written atomically (temp file + rename); a save stopped between two files (killed,
    /// a full disk) leaves a marker file that makes <see cref="Load"/> refuse the directory until a save finishes, so the
    /// files of two models never load together. A <c>model.safetensors.index.json</c> left in the directory by an earlier
    /// sharded save is deleted (it would describe other weights).
    /// </summary>
    public void SaveCheckpoint(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        using var use = _use.Enter(nameof(TeacherModel)); // before anything is written: a disposed teacher has no weights to write
        TeacherCheckpoints.Save(_module, Tokenizer, directory);
    }

    private static bool HasTokenizer(string dir) => TeacherTokenizer.FolderEntryFiles.Any(f => File.Exists(Path.Combine(dir, f)));

    private static void CheckTokenizerFits(TeacherTokenizer tokenizer, TeacherConfig config, string source)
    {
        if (tokenizer.VocabSize > config.VocabSize)
            throw new InvalidDataException($"{source}: the tokenizer has {tokenizer.VocabSize} tokens, but the model's vocab_size is {config.VocabSize}; they do not belong together.");
    }

    private static void CheckDType(ScalarType dtype)
    {
        if (dtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
            throw new ArgumentOutOfRangeException(nameof(dtype), $"DType must be Float32, Float16 or BFloat16, found {dtype}.");
    }

    // ------------------------------------------------------------------------------------------ differentiable API

    /// <summary>Token embeddings <c>[B, T, hidden]</c> for ids <c>[B, T]</c> (Int64), on <see cref="Device"/>.</summary>
    public Tensor Embed(Tensor tokenIds)
    {
        ArgumentNullException.ThrowIfNull(tokenIds);
        using var use = _use.Enter(nameof(TeacherModel));
        if (tokenIds.dim() != 2) throw new ArgumentException($"tokenIds must be [B, T], found [{string.Join(",", tokenIds.shape)}].", nameof(tokenIds));
        if (tokenIds.numel() > 0)
        {
            long max = tokenIds.max().item<long>(), min = tokenIds.min().item<long>();
            if (min < 0 || max >= Config.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(tokenIds), $"Token ids must lie in [0, {Config.VocabSize}), found [{min}, {max}].");
        }
        return _module.EmbedTokens(tokenIds.to(ScalarType.Int64, Device));
    }

    /// <summary>The input embedding of every token id, [vocab, hidden] on <see cref="Device"/> (the caller owns it: use a dispose scope).</summary>
    public Tensor EmbedVocabulary() => Embed(HeldScalars.Arange(Config.VocabSize, ScalarType.Int64, Device).unsqueeze(0)).squeeze(0);

    /// <summary>
    /// Forward pass from embeddings: <paramref name="inputsEmbeds"/> <c>[B, T, hidden]</c> (for example a soft prompt
    /// concatenated with <see cref="Embed"/> output) and an optional <paramref name="attentionMask"/> <c>[B, T]</c>
    /// (1 = token, 0 = left padding). Returns logits <c>[B, T, V]</c> (and final hidden states on request). Gradients
    /// flow into <paramref name="inputsEmbeds"/>; call under <c>torch.no_grad()</c> when none are needed. The caller
    /// owns the returned tensors (use a dispose scope).
    /// </summary>
    /// <param name="inputsEmbeds">Input embeddings <c>[B, T, hidden]</c>.</param>
    /// <param name="attentionMask">Key mask <c>[B, T]</c> (1 = token, 0 = left padding), or null when nothing is padded.</param>
    /// <param name="returnHiddenStates">Also return the final hidden states <c>[B, T, hidden]</c>.</param>
    /// <param name="logitsToKeep">
    /// Logits for the last this many slots only (<c>[B, logitsToKeep, V]</c>; HF's <c>logits_to_keep</c>): the LM head
    /// and its backward then skip the slots nobody reads. Null: every slot. The hidden states are always whole.
    /// </param>
    public CausalLMOutput Forward(Tensor inputsEmbeds, Tensor? attentionMask = null, bool returnHiddenStates = false, int? logitsToKeep = null)
    {
        ArgumentNullException.ThrowIfNull(inputsEmbeds);
        using var use = _use.Enter(nameof(TeacherModel));
        if (inputsEmbeds.dim() != 3 || inputsEmbeds.shape[2] != Config.HiddenSize)
            throw new ArgumentException($"inputsEmbeds must be [B, T, {Config.HiddenSize}], found [{string.Join(",", inputsEmbeds.shape)}].", nameof(inputsEmbeds));
        long b = inputsEmbeds.shape[0], t = inputsEmbeds.shape[1];
        if (t > Config.MaxPositions)
            throw new ArgumentException($"Sequence length {t} exceeds the model's context of {Config.MaxPositions} positions.", nameof(inputsEmbeds));
        if (attentionMask is not null && (attentionMask.dim() != 2 || attentionMask.shape[0] != b || attentionMask.shape[1] != t))
            throw new ArgumentException($"attentionMask must be [{b}, {t}], found [{string.Join(",", attentionMask.shape)}].", nameof(attentionMask));
        if (logitsToKeep is int keep && (keep < 1 || keep > t))
            throw new ArgumentOutOfRangeException(nameof(logitsToKeep), $"logitsToKeep must be in [1, {t}] (the sequence's slots), found {keep}.");
        var embeds = inputsEmbeds.to(DType, Device);
        var mask = attentionMask?.to(ScalarType.Int64, Device);
        var hidden = RunDecoder(embeds, mask, null);
        var logits = _module.LmHead(logitsToKeep is int k && k < t ? hidden.narrow(1, t - k, k) : hidden);
        return new CausalLMOutput(logits, returnHiddenStates ? hidden : null);
    }

    internal Tensor RunDecoder(Tensor embeds, Tensor? mask, KvCache? cache)
    {
        long b = embeds.shape[0], t = embeds.shape[1], past = cache?.Length ?? 0;
        var positions = AttentionMasks.Positions(mask, b, t, past, Device);
        var bias = AttentionMasks.Build(mask, t, past, Config.SlidingWindow, DType, Device);
        return _module.Decode(embeds, positions, bias, cache);
    }

    // ------------------------------------------------------------------------------------------ generation

    /// <summary>
    /// Generates continuations for a batch of prompts (left-padded together, one forward per step with a KV cache).
    /// Greedy when <see cref="GenerationRequest.Temperature"/> is 0 (per row: <see cref="GenerationRequest.RowTemperatures"/>),
    /// else sampled with a per-call generator seeded by <see cref="GenerationRequest.Seed"/>. Returns ids, text and
    /// per-token log-probabilities per row.
    /// </summary>
    /// <exception cref="ArgumentException">No prompts, or a prompt does not fit the context.</exception>
    /// <exception cref="InvalidOperationException">Text prompts or stop sequences, and the teacher has no tokenizer.</exception>
    /// <exception cref="OperationCanceledException"><see cref="GenerationRequest.Cancellation"/> fired before the call ended.</exception>
    public GenerationResult Generate(GenerationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        using var use = _use.Enter(nameof(TeacherModel));
        var prompts = PromptRows(request);
        int batch = prompts.Count;
        long prefixLength = PrefixLength(request.PrefixEmbeds, batch);
        int longest = prompts.Max(p => p.Length);
        for (int i = 0; i < batch; i++)
        {
            if (prompts[i].Length + prefixLength == 0)
                throw new ArgumentException($"Prompt {i} is empty and there is no prefix embedding: there is nothing to condition on (add BOS or text).", nameof(request));
            if (prompts[i].Length + prefixLength > Config.MaxPositions)
                throw new ArgumentException($"Prompt {i} has {prompts[i].Length + prefixLength} positions (prefix {prefixLength} + {prompts[i].Length} tokens), more than the model's context of {Config.MaxPositions}.", nameof(request));
        }
        if (request.MaxNewTokens < 0) throw new ArgumentOutOfRangeException(nameof(request), $"MaxNewTokens must be >= 0, found {request.MaxNewTokens}.");
        // Without a tokenizer the stops were skipped, and each row ran on to its token limit as if none had been asked for.
        if (request.StopSequences is { Count: > 0 } && Tokenizer is null)
            throw new InvalidOperationException("StopSequences are looked for in the decoded output, but this teacher has no tokenizer; load it with " +
                                                "TeacherLoadOptions.TokenizerPath, or stop on StopTokenIds.");
        if (request.Temperature < 0 || request.TopP <= 0 || request.TopP > 1 || request.TopK < 0 || request.RepetitionPenalty <= 0)
            throw new ArgumentOutOfRangeException(nameof(request), $"Invalid sampling settings: Temperature {request.Temperature} (>= 0), TopP {request.TopP} (0, 1], TopK {request.TopK} (>= 0), RepetitionPenalty {request.RepetitionPenalty} (> 0).");
        if (request.RowTemperatures is { } rowTemperatures && (rowTemperatures.Count != batch || rowTemperatures.Any(t => !(t >= 0) || double.IsInfinity(t))))
            throw new ArgumentOutOfRangeException(nameof(request), $"RowTemperatures needs one finite temperature >= 0 per row ({batch} rows), found [{string.Join(", ", rowTemperatures)}].");
        // Rows at one temperature take the one-temperature path, exactly as a request with that Temperature does.
        var temperatures = request.RowTemperatures is { } perRow && perRow.Distinct().Skip(1).Any() ? perRow.ToArray() : null;
        double sharedTemperature = request.RowTemperatures is { Count: > 0 } oneEach && temperatures is null ? oneEach[0] : request.Temperature;
        // Each row's own room: a row is capped by its own length, not its longest neighbour's (a short prompt batched
        // with one near the context's end was cut to the long one's room). The loop runs for the roomiest row.
        var rowMaxNew = prompts.Select(p => (int)Math.Min(request.MaxNewTokens, Config.MaxPositions - (p.Length + prefixLength))).ToArray();
        int maxNew = rowMaxNew.Max();
        var stopIds = new HashSet<int>(request.StopTokenIds ?? Config.EosTokenIds.Concat(Tokenizer?.EosId is int e ? [e] : []));
        bool greedy = temperatures is null && sharedTemperature == 0;

        var outIds = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        var outLogProbs = Enumerable.Range(0, batch).Select(_ => new List<float>()).ToArray();
        var reasons = Enumerable.Repeat("length", batch).ToArray();
        var done = rowMaxNew.Select(m => m == 0).ToArray();
        var texts = new string?[batch];
        int padId = Tokenizer?.PadId ?? Config.PadTokenId ?? 0;
        if (padId < 0 || padId >= Config.VocabSize) padId = 0;

        bool wasTraining = _module.training;
        _module.eval();
        using var outer = NewDisposeScope();
        using var noGrad = no_grad();
        using var generator = new Generator((ulong)(request.Seed ?? Random.Shared.NextInt64())); // a CPU one, as every TorchSharp generator (see Sampler.Draw)
        // Decoding steps run in managed code where that path serves the model (LLaMA, float32 on the CPU, a small batch;
        // see ManagedLlamaDecoder); the torch cache then holds the prefill only.
        var managed = request.UseKvCache && maxNew > 1 && !request.TorchDecode
            ? ManagedLlamaDecoder.TryCreate(_module, batch, longest + prefixLength + maxNew) : null;
        using var cache = request.UseKvCache && maxNew > 0 ? new KvCache(Config.NumLayers, longest + prefixLength + (managed is null ? maxNew : 0)) : null;
        try
        {
            request.Cancellation.ThrowIfCancellationRequested();
            var (embeds, mask) = BuildInputs(prompts, request.PrefixEmbeds, prefixLength);
            Tensor? seen = null;
            if (request.RepetitionPenalty != 1)
            {
                seen = zeros(new long[] { batch, Config.VocabSize }, ScalarType.Bool, Device);
                for (int i = 0; i < batch; i++)
                    if (prompts[i].Length > 0) seen[i].index_fill_(0, tensor(prompts[i].Select(x => (long)x).ToArray(), device: Device), HeldScalars.True);
            }
            var logits = PromptEndLogits(RunDecoder(embeds, mask, cache), prompts, prefixLength);
            managed?.AdoptPrefill(cache!, (int)prefixLength, prompts.Select(p => p.Length).ToArray());
            // Chosen tokens' log-probs stay on the device until the end: each step syncs only the ids (stop checks need them).
            var chosenLogps = zeros(new long[] { batch, Math.Max(maxNew, 1) }, ScalarType.Float32, Device);
            int steps = 0;
            using var temperature = sharedTemperature.ToScalar(); // held across the decoding loop (see HeldScalars)
            // Rows at their own temperatures: each row is scaled as a call at its temperature scales it, and greedy rows
            // (0) take the argmax of what the sampled ones sample from.
            var greedyRows = temperatures is null ? null : tensor(temperatures.Select(t => t == 0).ToArray(), device: Device);

            for (int step = 0; step < maxNew; step++)
            {
                request.Cancellation.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var raw = logits.to(ScalarType.Float32);
                var scaled = greedy ? raw
                    : temperatures is null ? Sampler.Scale(raw, sharedTemperature, temperature)
                    : cat(Enumerable.Range(0, batch).Select(i => ScaleRow(raw.narrow(0, i, 1), temperatures[i])).ToList(), 0);
                var logp = scaled.log_softmax(-1);
                var processed = seen is null ? scaled : Sampler.ApplyRepetitionPenalty(scaled, seen, request.RepetitionPenalty);
                Tensor next;
                if (greedy) next = processed.argmax(-1);
                else
                {
                    var greedyNext = greedyRows is null ? null : processed.argmax(-1);
                    processed = Sampler.TopP(Sampler.TopK(processed, request.TopK), request.TopP);
                    next = Sampler.Draw(processed.softmax(-1), generator);
                    if (greedyNext is not null) next = where(greedyRows!, greedyNext, next);
                }
                chosenLogps.narrow(1, step, 1).copy_(logp.gather(-1, next.unsqueeze(1)));
                steps = step + 1;
                var nextIds = next.cpu().data<long>().ToArray();
                for (int i = 0; i < batch; i++)
                {
                    if (done[i]) { nextIds[i] = padId; continue; }
                    int id = (int)nextIds[i];
                    outIds[i].Add(id);
                    if (stopIds.Contains(id)) { done[i] = true; reasons[i] = "stop_token"; }
                    else if (request.StopSequences is { Count: > 0 } stops)
                    {
                        var text = Tokenizer!.Decode(outIds[i]);
                        // Stops are looked for in the output as it reads after the prompt: SentencePiece's Decode drops
                        // the first piece's leading space ("▁there" → "there"), so a stop " there" there went unseen.
                        var reads = Tokenizer.DecodeContinuation(outIds[i], text);
                        int dropped = reads.Length - text.Length;
                        foreach (var s in stops)
                        {
                            int at = s.Length == 0 ? -1 : reads.IndexOf(s, StringComparison.Ordinal);
                            if (at >= 0) { done[i] = true; reasons[i] = "stop_sequence"; texts[i] = text[..Math.Max(0, at + s.Length - dropped)]; break; }
                        }
                    }
                    if (outIds[i].Count == rowMaxNew[i]) done[i] = true;   // its "length" reason is the default
                }
                if (done.All(d => d) || step == maxNew - 1) break;

                var feed = seen is not null || managed is null ? tensor(nextIds, new long[] { batch, 1 }, device: Device) : null;
                if (seen is not null) seen.scatter_(1, feed!, ones(batch, 1, ScalarType.Bool, Device));
                if (managed is not null)
                {
                    var stepLogits = managed.Step(nextIds).MoveToOuterDisposeScope();
                    logits.Dispose(); logits = stepLogits;
                    continue;
                }
                var newEmbeds = _module.EmbedTokens(feed!);
                // A finished row's slot is masked, so its position stops growing: a longer row finished at its cap would
                // otherwise step past the model's positions (GPT-2's table ends there) while a shorter one runs on. Rows
                // have one length when there is no mask, so their caps are equal and none can run past another's.
                Tensor? newMask = mask is null ? null
                    : cat([mask, tensor(done.Select(d => d ? 0L : 1L).ToArray(), new long[] { batch, 1 }, device: Device)], 1);
                Tensor hidden;
                if (cache is not null) hidden = RunDecoder(newEmbeds, newMask, cache);
                else
                {
                    var all = cat([embeds, newEmbeds], 1).MoveToOuterDisposeScope();
                    embeds.Dispose(); embeds = all;
                    hidden = RunDecoder(embeds, newMask, null);
                }
                if (newMask is not null) { newMask.MoveToOuterDisposeScope(); mask?.Dispose(); mask = newMask; }
                var nextLogits = LastLogits(hidden).MoveToOuterDisposeScope();
                logits.Dispose(); logits = nextLogits;
            }
            // A row's tokens fill its first slots (it only stops, never pauses), so its log-probs are a prefix of its row.
            var logps = chosenLogps.narrow(1, 0, Math.Max(steps, 1)).cpu().contiguous().data<float>().ToArray();
            int stride = Math.Max(steps, 1);
            for (int i = 0; i < batch; i++) outLogProbs[i].AddRange(logps.AsSpan(i * stride, outIds[i].Count).ToArray());
        }
        finally { if (wasTraining) _module.train(); }

        static Tensor ScaleRow(Tensor row, double rowTemperature)
        {
            if (rowTemperature == 0) return row;
            using var held = rowTemperature.ToScalar();
            return Sampler.Scale(row, rowTemperature, held);
        }

        var rows = new GeneratedSequence[batch];
        for (int i = 0; i < batch; i++)
        {
            var text = texts[i] ?? Tokenizer?.Decode(outIds[i]) ?? "";
            rows[i] = new GeneratedSequence(prompts[i], outIds[i].ToArray(), outLogProbs[i].ToArray(), text, reasons[i]);
        }
        return new GenerationResult(rows);
    }

    internal Tensor LastLogits(Tensor hidden) => _module.LmHead(hidden.narrow(1, hidden.shape[1] - 1, 1).squeeze(1));

    /// <summary>
    /// Next-token logits <c>[B, V]</c> after each row's prompt in a prefill laid out as [prefix][left padding][prompt]: the
    /// last slot, except for a row with no prompt ids padded next to longer ones, whose last real slot is the prefix's
    /// last (its last slot is a pad, whose output is not the prefix's).
    /// </summary>
    private Tensor PromptEndLogits(Tensor hidden, IReadOnlyList<int[]> prompts, long prefixLength)
    {
        long b = hidden.shape[0], last = hidden.shape[1] - 1;
        if (prefixLength == 0 || prompts.All(p => p.Length > 0) || prompts.All(p => p.Length == 0)) return LastLogits(hidden);
        var slots = prompts.Select(p => p.Length == 0 ? prefixLength - 1 : last).ToArray();
        var index = tensor(slots, new long[] { b, 1, 1 }, device: Device).expand(b, 1, hidden.shape[2]);
        return _module.LmHead(hidden.gather(1, index).squeeze(1));
    }

    private List<int[]> PromptRows(GenerationRequest request)
    {
        if (request.PromptIds is { } ids)
        {
            if (request.Prompts is not null) throw new ArgumentException("Give either Prompts or PromptIds, not both.", nameof(request));
            if (ids.Count == 0) throw new ArgumentException("PromptIds is empty.", nameof(request));
            for (int i = 0; i < ids.Count; i++)
                foreach (var id in ids[i] ?? throw new ArgumentException($"PromptIds[{i}] is null.", nameof(request)))
                    if (id < 0 || id >= Config.VocabSize) throw new ArgumentOutOfRangeException(nameof(request), $"PromptIds[{i}] holds id {id}, outside [0, {Config.VocabSize}).");
            return ids.ToList();
        }
        if (request.Prompts is not { Count: > 0 } prompts) throw new ArgumentException("Give Prompts or PromptIds (at least one row).", nameof(request));
        var tokenizer = Tokenizer ?? throw new InvalidOperationException("This teacher has no tokenizer; pass PromptIds, or load with TeacherLoadOptions.TokenizerPath.");
        bool addBos = request.AddBos ?? Config.Architecture == TeacherArchitecture.Llama;
        return prompts.Select(p => tokenizer.Encode(p, addBos)).ToList();
    }

    private long PrefixLength(Tensor? prefix, int batch)
    {
        if (prefix is null) return 0;
        bool ok = (prefix.dim() == 2 && prefix.shape[1] == Config.HiddenSize) ||
                  (prefix.dim() == 3 && prefix.shape[0] == batch && prefix.shape[2] == Config.HiddenSize);
        if (!ok) throw new ArgumentException($"PrefixEmbeds must be [P, {Config.HiddenSize}] or [{batch}, P, {Config.HiddenSize}], found [{string.Join(",", prefix.shape)}].");
        return prefix.shape[^2];
    }

    /// <summary>
    /// Embeddings for [prefix embeds][left padding][prompt ids] and the key mask (null when nothing is padded). The
    /// prefix comes first in memory, but positions are counted over unmasked slots only, so the model sees exactly
    /// [pad][prefix][prompt]: pads are invisible and take no position.
    /// </summary>
    private (Tensor Embeds, Tensor? Mask) BuildInputs(IReadOnlyList<int[]> rows, Tensor? prefix, long prefixLength)
    {
        int batch = rows.Count, longest = rows.Max(r => r.Length);
        var ids = new long[batch * longest];
        var maskValues = new long[batch * longest];
        bool padded = false;
        for (int i = 0; i < batch; i++)
        {
            int offset = longest - rows[i].Length;
            padded |= offset > 0;
            for (int j = 0; j < rows[i].Length; j++) { ids[i * longest + offset + j] = rows[i][j]; maskValues[i * longest + offset + j] = 1; }
        }
        var embeds = _module.EmbedTokens(tensor(ids, new long[] { batch, longest }, device: Device));
        Tensor? mask = padded ? tensor(maskValues, new long[] { batch, longest }, device: Device) : null;
        if (prefix is not null && prefixLength > 0)
        {
            var p = prefix.detach().to(DType, Device);
            if (p.dim() == 2) p = p.unsqueeze(0).expand(batch, -1, -1);
            embeds = cat([p, embeds], 1);
            if (mask is not null) mask = cat([ones(batch, prefixLength, ScalarType.Int64, Device), mask], 1);
        }
        return (embeds, mask);
    }

    // ------------------------------------------------------------------------------------------ scoring

    /// <summary>
    /// Log-likelihood of each continuation given its prefix, summed over the continuation's tokens:
    /// <c>log p(continuation | [prefixEmbeds] prefix)</c>. Rows are batched by length (<paramref name="batchSize"/> per
    /// forward pass, left padding), so a pass pads little. Prefixes are encoded with BOS (LLaMA family) and continuations
    /// on their own without BOS, as the verbalizer classifier needs; a continuation of a non-empty prefix is encoded as
    /// text that follows other text (<see cref="TeacherTokenizer.EncodeContinuation(string)"/>: no SentencePiece dummy-prefix
    /// space), so " great" after "It was" scores the tokens it is in "It was great". An empty prefix without a soft prompt
    /// is the start of a text: BOS, or for a teacher without one (GPT-2) its end-of-text token. Inference only.
    /// <paramref name="progress"/> is called after each forward pass with the rows scored so far and their total;
    /// <paramref name="cancellation"/> is checked before each pass. Neither changes the batches or the scores.
    /// </summary>
    public double[] ScoreContinuations(IReadOnlyList<string> prefixes, IReadOnlyList<string> continuations, Tensor? prefixEmbeds = null, int batchSize = DefaultScoringBatch,
        Action<int, int>? progress = null, CancellationToken cancellation = default)
    {
        var (p, c) = EncodeScoringRows(prefixes, continuations, prefixEmbeds);
        return ScoreEncoded(p, c, prefixEmbeds, batchSize, perToken: false, progress, cancellation);
    }

    /// <summary>
    /// <see cref="ScoreContinuations"/> divided by each continuation's token count, as that method encodes it: the mean
    /// per-token log-likelihood (the negative of the fluency filter's measure), without encoding the texts a second time.
    /// </summary>
    public double[] MeanTokenLogLikelihoods(IReadOnlyList<string> prefixes, IReadOnlyList<string> continuations, int batchSize = DefaultScoringBatch,
        Action<int, int>? progress = null, CancellationToken cancellation = default)
    {
        var (p, c) = EncodeScoringRows(prefixes, continuations, prefixEmbeds: null);
        return ScoreEncoded(p, c, prefixEmbeds: null, batchSize, perToken: true, progress, cancellation);
    }

    /// <summary>Summed (or, <paramref name="perToken"/>, mean per-token) log-likelihoods of encoded rows, batched by length.</summary>
    private double[] ScoreEncoded(List<int[]> p, List<int[]> c, Tensor? prefixEmbeds, int batchSize, bool perToken, Action<int, int>? progress, CancellationToken cancellation)
    {
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), $"batchSize must be positive, found {batchSize}.");
        return InLengthBatches(p.Count, i => p[i].Length + c[i].Length, batchSize, chunk =>
        {
            var embeds = prefixEmbeds is { } pe && pe.dim() == 3 ? pe.index_select(0, tensor(chunk.Select(i => (long)i).ToArray(), device: pe.device)) : prefixEmbeds;
            var scores = ContinuationLogLikelihood(chunk.Select(i => p[i]).ToList(), chunk.Select(i => c[i]).ToList(), embeds);
            var values = scores.to(ScalarType.Float64).cpu().data<double>().ToArray();
            if (perToken) for (int j = 0; j < chunk.Length; j++) values[j] /= c[chunk[j]].Length;
            return values;
        }, progress, cancellation);
    }

    /// <summary>The ids <see cref="ScoreContinuations"/> scores: prefixes with BOS (LLaMA family), continuations as text that follows them; validated.</summary>
    private (List<int[]> Prefixes, List<int[]> Continuations) EncodeScoringRows(IReadOnlyList<string> prefixes, IReadOnlyList<string> continuations, Tensor? prefixEmbeds)
    {
        ArgumentNullException.ThrowIfNull(prefixes); ArgumentNullException.ThrowIfNull(continuations);
        var tokenizer = Tokenizer ?? throw new InvalidOperationException("This teacher has no tokenizer; use the id overload of ContinuationLogLikelihood.");
        bool bos = Config.Architecture == TeacherArchitecture.Llama;
        var p = prefixes.Select(x => StartOfText(tokenizer.Encode(x, bos), prefixEmbeds is null)).ToList();
        // After text, a continuation is the ids it adds to the whole text (no SentencePiece dummy-prefix space); with no
        // prefix text it is the start of a text.
        var c = continuations.Select((x, i) => tokenizer.EncodeContinuation(x, afterText: i < prefixes.Count && prefixes[i].Length > 0)).ToList();
        if (p.Count != c.Count || p.Count == 0)
            throw new ArgumentException($"Need as many prefixes as continuations (at least one); found {p.Count} and {c.Count}.");
        // Checked here, before the rows are reordered, so a message names the caller's row.
        ValidateScoringRows(p, c, PrefixLength(prefixEmbeds, p.Count));
        return (p, c);
    }

    /// <summary>
    /// A prefix with no ids and nothing else to condition on (no soft prompt) starts with the tokenizer's BOS, else its EOS:
    /// a teacher that adds no BOS (GPT-2) scores a text from its end-of-text token, as lm-eval does, instead of refusing.
    /// </summary>
    private int[] StartOfText(int[] prefixIds, bool nothingElse) =>
        prefixIds.Length == 0 && nothingElse && (Tokenizer?.BosId ?? Tokenizer?.EosId) is int start ? [start] : prefixIds;

    /// <summary>
    /// The scoring methods' loop: rows ordered by <paramref name="length"/>, <paramref name="batchSize"/> per call of
    /// <paramref name="score"/> (given the rows' indices, it returns one value per row in that order), in eval mode without
    /// gradient, each call in its own dispose scope; the values come back in the caller's row order. Cancellation is checked
    /// before each call and progress (rows scored, of <paramref name="count"/>) reported after it: a scan of a test split
    /// takes minutes on a CPU, and neither touches the batches, their order or their math.
    /// </summary>
    private T[] InLengthBatches<T>(int count, Func<int, int> length, int batchSize, Func<int[], T[]> score,
        Action<int, int>? progress, CancellationToken cancellation)
    {
        using var use = _use.Enter(nameof(TeacherModel));
        var result = new T[count];
        // Rows of similar length share a pass, so a batch pads to a length close to its own rows'.
        var order = Enumerable.Range(0, count).OrderBy(length).ToArray();
        bool wasTraining = _module.training;
        _module.eval();
        try
        {
            using var noGrad = no_grad();
            for (int start = 0; start < order.Length; start += batchSize)
            {
                cancellation.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var chunk = order.AsSpan(start, Math.Min(batchSize, order.Length - start)).ToArray();
                var values = score(chunk);
                for (int j = 0; j < chunk.Length; j++) result[chunk[j]] = values[j];
                progress?.Invoke(start + chunk.Length, count);
            }
        }
        finally { if (wasTraining) _module.train(); }
        return result;
    }

    /// <summary>
    /// Rows per forward pass of the scoring methods. Small on purpose: on CPU a pass of 64 rows ran several times slower per
    /// row than passes of 16 (softlabels bench), mostly padding to the longest row and attention over it.
    /// </summary>
    public const int DefaultScoringBatch = 16;

    /// <summary>
    /// <c>log p(token | prefix)</c> of each of <paramref name="candidateIds"/> as the token right after each prefix:
    /// <c>[prefixes][candidates]</c>. Equal to <see cref="ScoreContinuations"/> with each candidate as a one-token
    /// continuation, at a fraction of its cost: one row per prefix instead of one per (prefix, candidate), the LM head at
    /// the last position only, and prefixes batched by length (<paramref name="batchSize"/> rows per forward pass) so
    /// little is padded. Prefixes are encoded with BOS (LLaMA family); an empty one is the start of a text (BOS, else EOS). Inference only.
    /// <paramref name="progress"/> is called after each forward pass with the prefixes scored so far and their total;
    /// <paramref name="cancellation"/> is checked before each pass. Neither changes the batches or the scores.
    /// </summary>
    public double[][] ScoreNextTokens(IReadOnlyList<string> prefixes, IReadOnlyList<int> candidateIds, int batchSize = DefaultScoringBatch,
        Action<int, int>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(prefixes); ArgumentNullException.ThrowIfNull(candidateIds);
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), $"batchSize must be positive, found {batchSize}.");
        if (candidateIds.Count == 0) throw new ArgumentException("Give at least one candidate token.", nameof(candidateIds));
        foreach (var id in candidateIds)
            if (id < 0 || id >= Config.VocabSize) throw new ArgumentOutOfRangeException(nameof(candidateIds), $"Candidate id {id} is outside [0, {Config.VocabSize}).");
        var tokenizer = Tokenizer ?? throw new InvalidOperationException("This teacher has no tokenizer to encode the prefixes with.");
        bool bos = Config.Architecture == TeacherArchitecture.Llama;
        var rows = prefixes.Select(x => StartOfText(tokenizer.Encode(x, bos), true)).ToList();
        for (int i = 0; i < rows.Count; i++)
        {
            if (rows[i].Length == 0) throw new ArgumentException($"Prefix {i} is empty: the next token has nothing to condition on.");
            if (rows[i].Length > Config.MaxPositions)
                throw new ArgumentException($"Prefix {i} has {rows[i].Length} positions, more than the model's context of {Config.MaxPositions}.");
        }
        var candidates = candidateIds.Select(c => (long)c).ToArray();
        return InLengthBatches(rows.Count, i => rows[i].Length, batchSize, chunk =>
        {
            var (embeds, mask) = BuildInputs(chunk.Select(i => rows[i]).ToList(), null, 0);
            var logProbabilities = LastLogits(RunDecoder(embeds, mask, null)).to(ScalarType.Float32).log_softmax(-1)
                .index_select(1, tensor(candidates, device: Device));
            var values = logProbabilities.to(ScalarType.Float64).cpu().data<double>().ToArray();
            return Enumerable.Range(0, chunk.Length).Select(j => values.AsSpan(j * candidates.Length, candidates.Length).ToArray()).ToArray();
        }, progress, cancellation);
    }

    /// <summary>
    /// Differentiable version of <see cref="ScoreContinuations"/> on ids: returns <c>[N]</c> summed log-probabilities of
    /// <paramref name="continuationIds"/> given <paramref name="prefixIds"/> (after the optional soft prompt
    /// <paramref name="prefixEmbeds"/> <c>[P, hidden]</c>, through which gradients flow). The caller owns the result.
    /// </summary>
    public Tensor ContinuationLogLikelihood(IReadOnlyList<int[]> prefixIds, IReadOnlyList<int[]> continuationIds, Tensor? prefixEmbeds = null)
    {
        ArgumentNullException.ThrowIfNull(prefixIds); ArgumentNullException.ThrowIfNull(continuationIds);
        using var use = _use.Enter(nameof(TeacherModel));
        if (prefixIds.Count != continuationIds.Count || prefixIds.Count == 0)
            throw new ArgumentException($"Need as many prefixes as continuations (at least one); found {prefixIds.Count} and {continuationIds.Count}.");
        int n = prefixIds.Count;
        long softLength = PrefixLength(prefixEmbeds, n);
        ValidateScoringRows(prefixIds, continuationIds, softLength);
        var rows = new List<int[]>(n);
        for (int i = 0; i < n; i++) rows.Add([.. prefixIds[i], .. continuationIds[i]]);
        int longest = rows.Max(r => r.Length);
        var ids = new long[n * longest]; var mask = new long[n * longest]; var weight = new float[n * longest];
        for (int i = 0; i < n; i++)
        {
            int offset = longest - rows[i].Length, contStart = longest - continuationIds[i].Length;
            for (int j = 0; j < rows[i].Length; j++) { ids[i * longest + offset + j] = rows[i][j]; mask[i * longest + offset + j] = 1; }
            for (int j = contStart; j < longest; j++) weight[i * longest + j] = 1;
        }
        var idT = tensor(ids, new long[] { n, longest }, device: Device);
        var maskT = tensor(mask, new long[] { n, longest }, device: Device);
        var weightT = tensor(weight, new long[] { n, longest }, device: Device);
        var embeds = _module.EmbedTokens(idT);
        if (softLength > 0)
        {
            var p = prefixEmbeds!.to(DType, Device);
            if (p.dim() == 2) p = p.unsqueeze(0).expand(n, -1, -1);
            embeds = cat([p, embeds], 1);
            maskT = cat([ones(n, softLength, ScalarType.Int64, Device), maskT], 1);
        }
        var logits = Forward(embeds, maskT).Logits.to(ScalarType.Float32);
        // Slot s predicts slot s+1. Token slot j sits at softLength + j; its predictor is softLength + j - 1.
        Tensor predictors, targets, weights;
        if (softLength > 0)
        {
            predictors = logits.narrow(1, softLength - 1, longest); targets = idT; weights = weightT;
            // A row with no prefix ids, padded, has pads between the soft prompt and its first token: that token is
            // predicted by the soft prompt's last slot, not by the pad slot before it (a pad attends to the soft prompt
            // as a token-0 embedding would, so its output is not the soft prompt's).
            var emptyPadded = Enumerable.Range(0, n).Where(i => prefixIds[i].Length == 0 && continuationIds[i].Length < longest).ToList();
            if (emptyPadded.Count > 0)
            {
                var slots = new long[n * longest];
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < longest; j++) slots[i * longest + j] = softLength - 1 + j;
                foreach (int i in emptyPadded) slots[i * longest + longest - continuationIds[i].Length] = softLength - 1;
                var index = tensor(slots, new long[] { n, longest, 1 }, device: Device).expand(n, longest, logits.shape[2]);
                predictors = logits.gather(1, index);
            }
        }
        else { predictors = logits.narrow(1, 0, longest - 1); targets = idT.narrow(1, 1, longest - 1); weights = weightT.narrow(1, 1, longest - 1); }
        var tokenLogp = predictors.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1);
        return tokenLogp.mul(weights).sum(1);
    }

    /// <summary>Checks (prefix, continuation) rows before scoring; messages name the row by its index in the caller's lists.</summary>
    private void ValidateScoringRows(IReadOnlyList<int[]> prefixIds, IReadOnlyList<int[]> continuationIds, long softLength)
    {
        for (int i = 0; i < prefixIds.Count; i++)
        {
            if (continuationIds[i].Length == 0) throw new ArgumentException($"Continuation {i} is empty (no tokens to score).");
            if (prefixIds[i].Length == 0 && softLength == 0) throw new ArgumentException($"Prefix {i} is empty and there is no soft prompt: the first continuation token has nothing to condition on.");
            long positions = prefixIds[i].Length + continuationIds[i].Length + softLength;
            if (positions > Config.MaxPositions)
                throw new ArgumentException($"Row {i} has {positions} positions, more than the model's context of {Config.MaxPositions}.");
            foreach (var id in prefixIds[i].Concat(continuationIds[i]))
                if (id < 0 || id >= Config.VocabSize) throw new ArgumentOutOfRangeException(nameof(prefixIds), $"Row {i} holds id {id}, outside [0, {Config.VocabSize}).");
        }
    }

    // ------------------------------------------------------------------------------------------ identity

    private string ComputeHash()
    {
        using var use = _use.Enter(nameof(TeacherModel));
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(Encoding.UTF8.GetBytes(Config.ToHuggingFaceJson().ToJsonString()));
        foreach (var (name, p) in _module.named_parameters().OrderBy(p => p.name, StringComparer.Ordinal))
        {
            sha.AppendData(Encoding.UTF8.GetBytes($"\n{name}|{p.dtype}|{string.Join(",", p.shape)}\n"));
            // A scope, not a using on the last tensor: detach() and to() made handles of their own, two per parameter left
            // to the finalizer (each holding the weights' storage, or on a GPU a whole CPU copy of them).
            using var scope = NewDisposeScope();
            var cpu = p.detach().to(CPU).contiguous();
            sha.AppendData(cpu.bytes);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    /// <summary>
    /// Releases the model's tensors once the calls in flight on other threads (generation, scoring, forward passes) have
    /// finished; later calls throw <see cref="ObjectDisposedException"/>. Idempotent.
    /// </summary>
    public void Dispose() => _use.Release(_module.Dispose);
}
