using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Text;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Encoders;

/// <summary>Options of <see cref="TinyEncoderPretrainer"/>. The shape defaults fit the tiny student's budget (≈ 110K parameters).</summary>
public sealed class TinyEncoderPretrainerOptions
{
    /// <summary>WordPiece vocabulary size, built from the corpus (special tokens, characters, then frequent words). Default 1,400.</summary>
    public int VocabularySize = 1400;
    /// <summary>A word enters the vocabulary only with at least this many occurrences. Default 2.</summary>
    public int MinWordFrequency = 2;
    /// <summary>Hidden size. Default 48.</summary>
    public int HiddenSize = 48;
    /// <summary>Transformer layers. Default 2.</summary>
    public int Layers = 2;
    /// <summary>Attention heads (must divide <see cref="HiddenSize"/>). Default 4.</summary>
    public int Heads = 4;
    /// <summary>Feed-forward size. Default 96.</summary>
    public int IntermediateSize = 96;
    /// <summary>Position embeddings: the longest input the encoder will take, in tokens. Default 128.</summary>
    public int MaxPositions = 128;
    /// <summary>Tokens per training window, [CLS] and [SEP] included (at most <see cref="MaxPositions"/>). Default 64.</summary>
    public int SequenceLength = 64;
    /// <summary>Optimizer steps. Default 6,000.</summary>
    public int Steps = 6000;
    /// <summary>Windows per step. Default 64.</summary>
    public int BatchSize = 64;
    /// <summary>Peak AdamW learning rate (linear warmup, cosine decay to a tenth). Default 2e-3.</summary>
    public double LearningRate = 2e-3;
    /// <summary>Warmup steps. Default 300.</summary>
    public int WarmupSteps = 300;
    /// <summary>AdamW weight decay on matrices. Default 0.01.</summary>
    public double WeightDecay = 0.01;
    /// <summary>Share of the ordinary tokens a window masks (of those, 80 % become [MASK], 10 % a random token, 10 % stay). Default 0.15.</summary>
    public double MaskProbability = 0.15;
    /// <summary>Seed of the initial weights, the window order and the masks; null uses the MLContext seed. Default null.</summary>
    public int? Seed;
}

/// <summary>What <see cref="TinyEncoderPretrainer.Train"/> did.</summary>
/// <param name="Directory">The Hugging Face BERT directory written (config.json, vocab.txt, model.safetensors, pretraining.json).</param>
/// <param name="Parameters">Encoder parameters (the masked-LM head used only while pretraining is not counted and not saved).</param>
/// <param name="Documents">Non-blank corpus documents.</param>
/// <param name="Windows">Training windows the documents were cut into.</param>
/// <param name="CorpusTokens">Word pieces in those windows, [CLS]/[SEP]/padding excluded.</param>
/// <param name="UnknownShare">Share of the corpus's word pieces that are [UNK] under the built vocabulary.</param>
/// <param name="FinalLoss">Mean masked-token loss over the last tenth of the steps.</param>
/// <param name="Elapsed">Wall time, vocabulary and tokenization included.</param>
public sealed record TinyEncoderReport(string Directory, long Parameters, int Documents, int Windows, long CorpusTokens, double UnknownShare,
    double FinalLoss, TimeSpan Elapsed);

/// <summary>
/// Pretrains the tiny student's encoder on unlabeled text before it ever sees a label: a BERT-shaped encoder of the
/// student's size (hidden 48, 2 layers, a 1,400-piece vocabulary built from the corpus) trained with the masked-token
/// loss, written as a Hugging Face BERT directory that <c>RetrievalClassifierTrainer.Options.Backbone</c> loads.
/// </summary>
/// <remarks>
/// Why: a student that starts from random weights learns its words from the store alone (and the few-shot student
/// from 32 sentences), so every word it never saw with a label is noise to it. An LLM-sized teacher's knowledge reaches
/// a student far better when the student already knows the language; a pretrained MiniLM does (the
/// <c>retrikt-minilm</c> row) but is four times the stand-in teacher. This gives the ≤ 2 % student the same start on
/// the teacher's own unlabeled corpus. The corpus is cut into windows of <see cref="TinyEncoderPretrainerOptions.SequenceLength"/>
/// ([CLS] pieces [SEP]); each step samples windows and masks pieces with generators derived from the seed and the
/// step, so a run is repeatable.
/// </remarks>
public sealed class TinyEncoderPretrainer
{
    private readonly IHostEnvironment _env;
    private readonly TinyEncoderPretrainerOptions _options;

    /// <summary>Creates a pretrainer that logs through <paramref name="mlContext"/>.</summary>
    public TinyEncoderPretrainer(MLContext mlContext, TinyEncoderPretrainerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        _env = mlContext;
        var o = _options = options ?? new TinyEncoderPretrainerOptions();
        void Check(bool ok, string message) { if (!ok) throw new ArgumentOutOfRangeException(nameof(options), message); }
        Check(o.VocabularySize >= WordPieceVocabulary.SpecialTokens.Count + 2, $"VocabularySize must be at least {WordPieceVocabulary.SpecialTokens.Count + 2}, found {o.VocabularySize}.");
        Check(o.HiddenSize > 0 && o.Heads > 0 && o.HiddenSize % o.Heads == 0, $"HiddenSize ({o.HiddenSize}) must be a positive multiple of Heads ({o.Heads}).");
        Check(o.Layers > 0 && o.IntermediateSize > 0, $"Layers and IntermediateSize must be positive, found {o.Layers} and {o.IntermediateSize}.");
        Check(o.SequenceLength >= 3 && o.SequenceLength <= o.MaxPositions, $"SequenceLength must be in [3, MaxPositions = {o.MaxPositions}], found {o.SequenceLength}.");
        Check(o.Steps > 0 && o.BatchSize > 0 && o.WarmupSteps >= 0, $"Steps and BatchSize must be positive and WarmupSteps >= 0, found {o.Steps}, {o.BatchSize}, {o.WarmupSteps}.");
        // Finite, as TeacherPretrainer asks: an infinite LearningRate trained and then failed writing pretraining.json
        // ("positive and negative infinity cannot be written as valid JSON"), naming no option.
        Check(o.LearningRate > 0 && double.IsFinite(o.LearningRate) && o.WeightDecay >= 0 && double.IsFinite(o.WeightDecay),
            $"LearningRate must be positive and finite and WeightDecay >= 0 and finite, found {o.LearningRate} and {o.WeightDecay}.");
        Check(o.MaskProbability is > 0 and < 1, $"MaskProbability must be in (0, 1), found {o.MaskProbability}.");
    }

    /// <summary>The encoder's shape for a vocabulary of <paramref name="vocabularySize"/> pieces.</summary>
    public BertConfig Config(int vocabularySize) => new BertConfig
    {
        VocabSize = vocabularySize, HiddenSize = _options.HiddenSize, NumLayers = _options.Layers, NumHeads = _options.Heads,
        IntermediateSize = _options.IntermediateSize, MaxPositions = _options.MaxPositions, TypeVocabSize = 2, LayerNormEpsilon = 1e-12,
    }.Validate();

    /// <summary>
    /// Builds the vocabulary from <paramref name="documents"/>, pretrains, and writes <paramref name="outputDirectory"/>
    /// atomically (a temporary folder renamed at the end; an existing directory is replaced only then).
    /// </summary>
    public TinyEncoderReport Train(IEnumerable<string> documents, string outputDirectory, IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(documents);
        ArgumentException.ThrowIfNullOrEmpty(outputDirectory);
        var o = _options;
        var host = new ComponentHost(_env, nameof(TinyEncoderPretrainer), o.Seed, progress, cancellation);
        var clock = Stopwatch.StartNew();
        // Cancellable while the corpus is read, counted and encoded, as TeacherPretrainer's: a cancellation was first
        // looked at before step 1, after all of it (13 s for the 21 MB IMDb corpus).
        cancellation.ThrowIfCancellationRequested();
        var docs = documents.Where(d => { cancellation.ThrowIfCancellationRequested(); return !string.IsNullOrWhiteSpace(d); }).ToList();
        if (docs.Count == 0) throw new ArgumentException("The corpus has no non-blank document.", nameof(documents));
        var vocabulary = WordPieceVocabulary.Build(docs.Select(d => { cancellation.ThrowIfCancellationRequested(); return d; }), o.VocabularySize, o.MinWordFrequency);
        var (windows, pieces, unknown) = Windows(docs, vocabulary, o.SequenceLength, cancellation);
        if (windows.Count == 0) throw new ArgumentException("The corpus gives no training window.", nameof(documents));
        var config = Config(vocabulary.Count);
        host.Info(string.Create(CultureInfo.InvariantCulture,
            $"Pretraining a tiny encoder (hidden {config.HiddenSize}, {config.NumLayers} layers, vocabulary {vocabulary.Count}) on {docs.Count:N0} documents = " +
            $"{windows.Count:N0} windows of ≤ {o.SequenceLength} ({pieces:N0} pieces, {100.0 * unknown / Math.Max(1, pieces):F1} % [UNK]): {o.Steps} steps × {o.BatchSize}."));

        var device = host.ResolveDevice();
        using var corpus = tensor(windows.SelectMany(w => w).Select(i => (long)i).ToArray(), [windows.Count, o.SequenceLength], device: device);
        using var model = new MaskedLmModel(config);
        using (var init = new Generator((ulong)SeedMixer.Derive(host.Seed, "tiny-encoder-init"))) model.Initialize(init);
        model.to(device);
        var parameters = model.named_parameters().Select(p => (p.name, p.parameter)).ToList();
        using var optimizer = HeldAdamW.DecayingMatrices(parameters.Select(p => p.parameter), o.LearningRate, 0.9, 0.999, o.WeightDecay);
        // Build puts the special tokens ([PAD], [UNK], [CLS], [SEP], [MASK]) first: every id from here on is an ordinary piece.
        int firstOrdinary = WordPieceVocabulary.SpecialTokens.Count;
        // The step's numbers as Scalars held across the loop (see HeldScalars), not temporaries made per call.
        using Scalar ordinaryFrom = firstOrdinary.ToScalar(), maskShare = o.MaskProbability.ToScalar(), toMask = 0.8.ToScalar(), toRandom = 0.9.ToScalar(),
            maskId = vocabulary.MaskId.ToScalar(), padId = vocabulary.PadId.ToScalar();
        int tailFrom = o.Steps - Math.Max(1, o.Steps / 10) + 1;
        double tailSum = 0, smoothed = double.NaN;
        model.train();
        for (int step = 1; step <= o.Steps; step++)
        {
            host.CheckAlive();
            double lr = LearningRateSchedule.WarmupCosine(step, o.Steps, o.WarmupSteps, o.LearningRate, 0.1);
            optimizer.LearningRate = lr;
            using var scope = NewDisposeScope();
            using var generator = new Generator((ulong)SeedMixer.Derive(host.Seed, "tiny-encoder-step", step));
            var rows = randint(0, windows.Count, [o.BatchSize], ScalarType.Int64, CPU, generator: generator).to(device);
            var ids = corpus.index_select(0, rows);
            var ordinary = ids.ge(ordinaryFrom);
            var draw = rand(ids.shape, generator: generator).to(device);
            var chosen = draw.lt(maskShare).logical_and(ordinary);
            var how = rand(ids.shape, generator: generator).to(device);
            var randomIds = randint(firstOrdinary, vocabulary.Count, ids.shape, ScalarType.Int64, CPU, generator: generator).to(device);
            var inputs = where(chosen.logical_and(how.lt(toMask)), full_like(ids, maskId), ids);
            inputs = where(chosen.logical_and(how.ge(toMask)).logical_and(how.lt(toRandom)), randomIds, inputs);
            var mask = ids.ne(padId).to(ScalarType.Int64);
            var positions = chosen.flatten().nonzero().squeeze(1);
            if (positions.numel() == 0) continue;
            var logits = model.Forward(inputs, mask, positions);
            var loss = nn.functional.cross_entropy(logits, ids.flatten().index_select(0, positions));
            optimizer.ZeroGrad();
            loss.backward();
            nn.utils.clip_grad_norm_(model.parameters(), 1.0);
            optimizer.Step();
            double value = loss.item<float>();
            if (!double.IsFinite(value)) throw new InvalidOperationException($"Tiny encoder pretraining diverged at step {step}: loss {value}. Lower LearningRate.");
            // As in TeacherPretrainer: at LearningRate 1e5 the last of 2 steps read a finite loss and its update made every
            // weight NaN, which the run wrote as the encoder.
            if (NonFiniteParameters.First(parameters) is { } bad)
                throw new InvalidOperationException($"Tiny encoder pretraining diverged at step {step}: after the update, parameter '{bad.Name}' holds {bad.Count} NaN or " +
                    $"infinite values of {bad.Of} (loss {value}). Lower LearningRate.");
            smoothed = double.IsNaN(smoothed) ? value : 0.98 * smoothed + 0.02 * value;
            if (step >= tailFrom) tailSum += value;
            host.Report("TinyEncoder", step, o.Steps, new Dictionary<string, double> { ["loss"] = value, ["smoothedLoss"] = smoothed, ["lr"] = lr });
        }
        model.eval();
        double finalLoss = tailSum / (o.Steps - tailFrom + 1);
        var report = new TinyEncoderReport(Path.GetFullPath(outputDirectory), model.Encoder.parameters().Sum(p => p.numel()), docs.Count, windows.Count, pieces,
            (double)unknown / Math.Max(1, pieces), finalLoss, clock.Elapsed);
        Write(outputDirectory, config, vocabulary, model.Encoder, report, o);
        host.Info(string.Create(CultureInfo.InvariantCulture, $"Tiny encoder: {report.Parameters:N0} parameters, final masked-token loss {finalLoss:F3}, {clock.Elapsed.TotalMinutes:F1} min; written to {report.Directory}."));
        return report;
    }

    /// <summary>Each document's pieces cut into windows of [CLS] + ≤ length − 2 pieces + [SEP], padded with [PAD].</summary>
    private static (List<int[]> Windows, long Pieces, long Unknown) Windows(List<string> docs, WordPieceVocabulary vocabulary, int length, CancellationToken cancellation)
    {
        var encoded = new List<int>[docs.Count];
        Parallel.For(0, docs.Count, new ParallelOptions { CancellationToken = cancellation }, i => encoded[i] = vocabulary.Encode(docs[i]));
        var windows = new List<int[]>();
        long pieces = 0, unknown = 0;
        int body = length - 2;
        foreach (var e in encoded)
            for (int from = 0; from < e.Count; from += body)
            {
                int n = Math.Min(body, e.Count - from);
                var w = new int[length];
                Array.Fill(w, vocabulary.PadId);
                w[0] = vocabulary.ClsId;
                for (int j = 0; j < n; j++) { w[j + 1] = e[from + j]; if (w[j + 1] == vocabulary.UnknownId) unknown++; }
                w[n + 1] = vocabulary.SepId;
                pieces += n;
                windows.Add(w);
            }
        return (windows, pieces, unknown);
    }

    private static void Write(string directory, BertConfig config, WordPieceVocabulary vocabulary, BertEncoderModule encoder, TinyEncoderReport report,
        TinyEncoderPretrainerOptions o)
    {
        var full = Path.GetFullPath(directory);
        var temporary = full.TrimEnd(Path.DirectorySeparatorChar) + ".tmp-" + Guid.NewGuid().ToString("N")[..8];
        Directory.CreateDirectory(temporary);
        try
        {
            var json = new JsonSerializerOptions { WriteIndented = true };
            File.WriteAllText(Path.Combine(temporary, "config.json"), new JsonObject
            {
                ["model_type"] = "bert", ["architectures"] = new JsonArray("BertModel"), ["vocab_size"] = config.VocabSize, ["hidden_size"] = config.HiddenSize,
                ["num_hidden_layers"] = config.NumLayers, ["num_attention_heads"] = config.NumHeads, ["intermediate_size"] = config.IntermediateSize,
                ["max_position_embeddings"] = config.MaxPositions, ["type_vocab_size"] = config.TypeVocabSize, ["layer_norm_eps"] = config.LayerNormEpsilon,
                ["hidden_act"] = "gelu", ["position_embedding_type"] = "absolute",
            }.ToJsonString(json));
            File.WriteAllLines(Path.Combine(temporary, "vocab.txt"), vocabulary.Tokens);
            using (var scope = NewDisposeScope())
                Safetensors.Write(Path.Combine(temporary, "model.safetensors"), encoder.named_parameters().Select(p => (p.name, p.parameter.detach().cpu())));
            File.WriteAllText(Path.Combine(temporary, "pretraining.json"), JsonSerializer.Serialize(new { Options = o, Report = report with { Directory = full } },
                new JsonSerializerOptions { WriteIndented = true, IncludeFields = true }));
            AtomicFile.ReplaceDirectory(temporary, full);
        }
        catch
        {
            if (Directory.Exists(temporary)) Directory.Delete(temporary, recursive: true);
            throw;
        }
    }
}

/// <summary>The encoder plus the masked-token head used only while pretraining (dense + GELU + LayerNorm, then the vocabulary projection).</summary>
internal sealed class MaskedLmModel : nn.Module
{
    private readonly BertEncoderModule encoder;
    private readonly Linear transform, decoder;
    private readonly LayerNorm norm;

    public MaskedLmModel(BertConfig config) : base(nameof(MaskedLmModel))
    {
        encoder = new BertEncoderModule(config, withPooler: false);
        transform = nn.Linear(config.HiddenSize, config.HiddenSize);
        norm = nn.LayerNorm(config.HiddenSize, eps: config.LayerNormEpsilon);
        decoder = nn.Linear(config.HiddenSize, config.VocabSize);
        RegisterComponents();
    }

    public BertEncoderModule Encoder => encoder;

    /// <summary>BERT's initialisation: matrices and embeddings N(0, 0.02), biases 0, LayerNorms 1 and 0.</summary>
    public void Initialize(Generator generator)
    {
        // A scope: normal_ returns a handle of its own (one per weight matrix), which was left to the finalizer at every run.
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.Contains("LayerNorm", StringComparison.Ordinal) || name.StartsWith("norm.", StringComparison.Ordinal))
                p.fill_(name.EndsWith("weight", StringComparison.Ordinal) ? 1 : 0);
            else if (p.dim() >= 2) p.normal_(0, 0.02, generator);
            else p.zero_();
        }
    }

    /// <summary>Logits over the vocabulary at <paramref name="positions"/> (indices into the flattened [B·T] batch).</summary>
    public Tensor Forward(Tensor inputIds, Tensor attentionMask, Tensor positions)
    {
        var states = encoder.Forward(inputIds, attentionMask);
        var picked = states.reshape(-1, states.shape[^1]).index_select(0, positions);
        return decoder.forward(norm.forward(nn.functional.gelu(transform.forward(picked))));
    }
}
