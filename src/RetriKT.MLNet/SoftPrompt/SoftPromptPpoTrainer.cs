using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Teacher;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.SoftPrompt;

/// <summary>Metrics of one PPO iteration.</summary>
public sealed record PpoStepMetrics(int Step, double Reward, double Fidelity, double Diversity, double Penalty, double Kl,
    double KlCoefficient, double PolicyLoss, double ValueLoss, double ClipFraction, double ApproxKl, double Entropy);

/// <summary>What training did: stage-1 NLL before and after, and every PPO iteration's metrics.</summary>
public sealed record SoftPromptTrainingReport(double InitialNll, double SupervisedNll, IReadOnlyList<double> SupervisedEpochNll,
    IReadOnlyList<PpoStepMetrics> PpoSteps);

/// <summary>
/// RetriKT steps 1 and 2: tunes label-conditioned soft prompts in front of a frozen teacher LLM so that it generates
/// in-domain samples for each label. Stage 1 maximises the log-likelihood of each few-shot example under its label's
/// prompt; stage 2 runs PPO on the prompts (and a small value head) with a reward for fidelity to the intended label
/// and diversity, minus repetition/length penalties, and a per-token KL penalty against the stage-1 prompts.
/// </summary>
/// <remarks>
/// Input: the template's text column(s) (String) and <c>Label</c> (String, or key with text values). Fit returns a
/// <see cref="SoftPromptTransformer"/> whose Transform generates one sample per row for the row's label. The teacher is
/// referenced by path and content hash in model.zip, never embedded.
/// </remarks>
public sealed class SoftPromptPpoTrainer : IEstimator<SoftPromptTransformer>
{
    private readonly IHostEnvironment _env;
    private readonly SoftPromptPpoOptions _options;

    internal SoftPromptPpoTrainer(IHostEnvironment env, SoftPromptPpoOptions options)
    {
        _env = env ?? throw new ArgumentNullException(nameof(env));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        options.Validate();
    }

    /// <summary>Labels in training order (the template's verbalizer order unless <see cref="SoftPromptPpoOptions.Labels"/> is set).</summary>
    public IReadOnlyList<string> Labels => _options.Labels ?? _options.Template!.Verbalizer.Keys.ToList();

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var template = _options.Template!;
        if (!inputSchema.Any(c => c.Name == _options.LabelColumnName))
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Label column '{_options.LabelColumnName}' not found.");
        if (template.Target == GenerationTarget.SecondPart && !inputSchema.Any(c => c.Name == template.TextColumn))
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Template '{template.Name}' names column '{template.TextColumn}', which the data does not have.");
        var columns = inputSchema.ToDictionary(c => c.Name);
        foreach (var name in SoftPromptTransformer.OutputNames(template))
            columns[name] = SchemaShapes.Scalar(name, TextDataViewType.Instance);
        return new SchemaShape(columns.Values);
    }

    /// <summary>Runs stage 1 then stage 2 on the few-shot data and returns the tuned prompts.</summary>
    public SoftPromptTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var o = _options;
        var template = o.Template!;
        var labels = Labels;
        template.Validate(labels, input.Schema);
        var examples = ReadExamples(input, template, o.LabelColumnName, labels);
        var host = new ComponentHost(_env, nameof(SoftPromptPpoTrainer), o.Seed, o.Progress, o.CancellationToken);

        bool ownsTeacher = o.Teacher is null;
        var teacher = o.Teacher ?? TeacherModel.Load(o.TeacherPath!, new TeacherLoadOptions { Device = host.ResolveDevice() });
        try
        {
            teacher.RequiresGrad = false;
            var (policy, report) = Train(teacher, template, labels, examples, host);
            var (labelPrompts, taskPrompt) = policy.Prompts.Snapshot();
            var transformer = new SoftPromptTransformer(_env, o.TeacherPath!, teacher.ContentHash, template, labels, o.LabelColumnName,
                labelPrompts, taskPrompt, policy.Prompts.LabelTokens, policy.Prompts.TaskTokens, policy.Prompts.Hidden,
                o.Temperature, o.MaxNewTokens ?? template.MaxNewTokens, host.Seed, teacher, ownsTeacher, report);
            policy.Prompts.Dispose();
            policy.Value.Dispose();
            ownsTeacher = false; // the transformer owns it now
            return transformer;
        }
        finally
        {
            if (ownsTeacher) teacher.Dispose();
        }
    }

    private (SoftPromptPolicy Policy, SoftPromptTrainingReport Report) Train(TeacherModel teacher, TaskTemplate template,
        IReadOnlyList<string> labels, List<PromptExample> examples, ComponentHost host)
    {
        var o = _options;
        var tokenizer = teacher.Tokenizer ?? throw new InvalidOperationException($"Teacher '{o.TeacherPath}' has no tokenizer; soft prompt training needs one.");
        random.manual_seed(host.Seed);
        SoftPromptModule prompts;
        using (var init = NewDisposeScope())
        using (no_grad())
        using (var generator = new Generator((ulong)host.Seed, CPU))
        {
            var matrix = teacher.Embed(arange(teacher.Config.VocabSize, ScalarType.Int64, teacher.Device).unsqueeze(0)).squeeze(0);
            var initIds = tokenizer.Encode(o.InitText, addBos: false);
            var (labelInit, taskInit) = SoftPromptModule.Initialize(o.Init, matrix, labels.Count, o.PromptTokens, o.TaskPromptTokens,
                l => [.. initIds, .. tokenizer.Encode(template.Verbalizer[labels[l]], addBos: false)], initIds, generator);
            prompts = new SoftPromptModule(labelInit, taskInit);
        }
        prompts.to(teacher.Device);
        var valueHead = new ValueHead(teacher.Config.HiddenSize);
        valueHead.to(teacher.Device);
        var policy = new SoftPromptPolicy(teacher, template, prompts, valueHead);
        var rng = new Random(host.Seed);

        // ---- stage 1: supervised prompt tuning
        double Nll()
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            double total = 0;
            foreach (var chunk in examples.Chunk(o.BatchSize)) total += policy.SupervisedNll(chunk).item<float>() * chunk.Length;
            return total / examples.Count;
        }
        double initialNll = Nll();
        host.Info($"Stage 1 (supervised prompt tuning): {examples.Count} examples, {labels.Count} labels, prompt {prompts.Length} tokens × {prompts.Hidden}; initial NLL {initialNll:F4}/token.");
        var epochNll = new List<double>();
        using (var optimizer = optim.Adam(prompts.parameters(), o.SupervisedLearningRate))
        {
            for (int epoch = 0; epoch < o.SupervisedEpochs; epoch++)
            {
                var order = examples.OrderBy(_ => rng.Next()).ToList();
                double sum = 0;
                foreach (var batch in order.Chunk(o.BatchSize))
                {
                    using var scope = NewDisposeScope();
                    optimizer.zero_grad();
                    var loss = policy.SupervisedNll(batch);
                    loss.backward();
                    nn.utils.clip_grad_norm_(prompts.parameters(), o.MaxGradientNorm);
                    optimizer.step();
                    sum += loss.item<float>() * batch.Length;
                }
                epochNll.Add(sum / examples.Count);
                host.Report("Stage 1", epoch + 1, o.SupervisedEpochs, new Dictionary<string, double> { ["nll"] = epochNll[^1] });
            }
        }
        double supervisedNll = Nll();
        host.Info($"Stage 1 done: NLL {initialNll:F4} → {supervisedNll:F4} per token.");
        WriteCsv(o.MetricsCsvPath is null ? null : Path.ChangeExtension(o.MetricsCsvPath, ".stage1.csv"),
            "epoch,nll", epochNll.Select((v, i) => $"{i + 1},{v.ToString("G6", CultureInfo.InvariantCulture)}"));

        // ---- stage 2: PPO
        var ppo = new List<PpoStepMetrics>();
        if (o.PpoSteps > 0)
        {
            var reward = o.Reward ?? new RetriKTReward(new VerbalizerClassifier(teacher, template, labels, o.CalibrateVerbalizer), o.RewardWeights, template.MinWords);
            var snapshot = prompts.Snapshot();
            using var reference = new SoftPromptModule(
                tensor(snapshot.LabelPrompts, [prompts.Labels, prompts.LabelTokens, prompts.Hidden]),
                snapshot.TaskPrompt is null ? null : tensor(snapshot.TaskPrompt, [prompts.TaskTokens, prompts.Hidden]));
            reference.to(teacher.Device);
            foreach (var p in reference.parameters()) p.requires_grad = false;
            var kl = new AdaptiveKlController(o.InitialKlCoefficient, o.TargetKl ?? 1, o.KlHorizon);
            var contexts = examples.Select(e => e.Text).Distinct().ToList();
            using var optimizer = optim.Adam(prompts.parameters().Concat(valueHead.parameters()), o.PpoLearningRate);
            int maxNew = o.MaxNewTokens ?? template.MaxNewTokens;
            for (int step = 0; step < o.PpoSteps; step++)
            {
                var requests = Enumerable.Range(0, o.RolloutsPerStep).Select(i => (Label: i % labels.Count,
                    Context: template.Target == GenerationTarget.SecondPart ? template.RenderContext(contexts[rng.Next(contexts.Count)]) : "")).ToList();
                var rollouts = policy.Sample(requests, maxNew, o.Temperature, (long)host.Seed * 100_003 + step);
                var samples = rollouts.Select(r =>
                {
                    var (text, text2) = template.Target == GenerationTarget.SecondPart
                        ? (r.Context[..^template.PairSeparator.Length], r.Generated.Trim())
                        : template.SplitGenerated("", r.Generated);
                    return new RolloutSample(r.Label, text, text2, r.Generated, r.ResponseIds.Length, r.Finished);
                }).ToList();
                var scores = reward.Score(samples);
                ppo.Add(PpoStep(policy, reference, rollouts, scores, kl, optimizer, step));
                if (o.TargetKl is not null) kl.Update(ppo[^1].Kl, rollouts.Count);
                var m = ppo[^1];
                host.Report("PPO", step + 1, o.PpoSteps, new Dictionary<string, double>
                {
                    ["reward"] = m.Reward, ["fidelity"] = m.Fidelity, ["diversity"] = m.Diversity, ["kl"] = m.Kl,
                    ["value_loss"] = m.ValueLoss, ["clip_frac"] = m.ClipFraction, ["entropy"] = m.Entropy,
                });
            }
            WriteCsv(o.MetricsCsvPath, "step,reward,fidelity,diversity,penalty,kl,kl_coef,policy_loss,value_loss,clip_fraction,approx_kl,entropy",
                ppo.Select(m => string.Join(',', new double[] { m.Step, m.Reward, m.Fidelity, m.Diversity, m.Penalty, m.Kl, m.KlCoefficient,
                    m.PolicyLoss, m.ValueLoss, m.ClipFraction, m.ApproxKl, m.Entropy }.Select(v => v.ToString("G6", CultureInfo.InvariantCulture)))));
        }
        return (policy, new SoftPromptTrainingReport(initialNll, supervisedNll, epochNll, ppo));
    }

    private PpoStepMetrics PpoStep(SoftPromptPolicy policy, SoftPromptModule reference, List<Rollout> rollouts,
        IReadOnlyList<RewardBreakdown> scores, AdaptiveKlController kl, optim.Optimizer optimizer, int step)
    {
        var o = _options;
        var device = policy.Teacher.Device;
        var labels = tensor(rollouts.Select(r => (long)r.Label).ToArray(), device: device);
        using var outer = NewDisposeScope();
        Tensor oldLogp, oldValues, mask, advantages, returns, sequenceKl;
        using (no_grad())
        {
            var (logp, values, m, _) = policy.Evaluate(rollouts, policy.Prompts.PromptsFor(labels, policy.Teacher.DType), o.Temperature);
            var (refLogp, _, _, _) = policy.Evaluate(rollouts, reference.PromptsFor(labels, policy.Teacher.DType), o.Temperature);
            var score = tensor(scores.Select(s => (float)s.Total).ToArray(), device: device);
            var (rewards, tokenKl) = PpoMath.TokenRewards(score, logp, refLogp, m, kl.Value);
            (advantages, returns) = PpoMath.Gae(rewards, values, m, o.Gamma, o.Lambda);
            advantages = PpoMath.Whiten(advantages, m);
            (oldLogp, oldValues, mask) = (logp, values, m);
            sequenceKl = tokenKl.sum(1).mean();
        }

        double policyLoss = 0, valueLoss = 0, clip = 0, approxKl = 0, entropy = 0;
        int updates = 0;
        var order = new Random(unchecked(step * 7919 + 1));
        for (int epoch = 0; epoch < o.PpoEpochs; epoch++)
        {
            var permutation = Enumerable.Range(0, rollouts.Count).OrderBy(_ => order.Next()).ToArray();
            foreach (var chunk in permutation.Chunk(o.MiniBatchSize))
            {
                using var scope = NewDisposeScope();
                var index = tensor(chunk.Select(i => (long)i).ToArray(), device: device);
                var batch = chunk.Select(i => rollouts[i]).ToList();
                var (logp, values, m, ent) = policy.Evaluate(batch, policy.Prompts.PromptsFor(labels.index_select(0, index), policy.Teacher.DType), o.Temperature);
                // Re-slice the stored tensors to this minibatch's response width.
                long width = m.shape[1];
                Tensor Rows(Tensor t) => t.index_select(0, index).narrow(1, 0, width);
                var (pl, cf, ak) = PpoMath.PolicyLoss(logp, Rows(oldLogp), Rows(advantages), m, o.ClipRange);
                var vl = PpoMath.ValueLoss(values, Rows(oldValues), Rows(returns), m, o.ValueClipRange);
                var loss = pl.add(vl.mul(o.ValueCoefficient));
                optimizer.zero_grad();
                loss.backward();
                nn.utils.clip_grad_norm_(policy.Prompts.parameters().Concat(policy.Value.parameters()), o.MaxGradientNorm);
                optimizer.step();
                policyLoss += pl.item<float>(); valueLoss += vl.item<float>(); clip += cf.item<float>(); approxKl += ak.item<float>();
                entropy += PpoMath.MaskedMean(ent, m).item<float>();
                updates++;
            }
        }
        return new PpoStepMetrics(step + 1, scores.Average(s => s.Total), scores.Average(s => s.Fidelity), scores.Average(s => s.Diversity),
            scores.Average(s => s.Penalty), sequenceKl.item<float>(), kl.Value, policyLoss / updates, valueLoss / updates, clip / updates,
            approxKl / updates, entropy / updates);
    }

    internal static List<PromptExample> ReadExamples(IDataView input, TaskTemplate template, string labelColumn, IReadOnlyList<string> labels)
    {
        var schema = input.Schema;
        var labelCol = schema.GetColumnOrNull(labelColumn)
            ?? throw new ArgumentOutOfRangeException(nameof(input), $"Label column '{labelColumn}' not found. Columns: {string.Join(", ", schema.Select(c => $"'{c.Name}'"))}.");
        var text = schema[template.TextColumn];
        var text2 = template.Text2Column is null ? (DataViewSchema.Column?)null : schema[template.Text2Column];
        var readLabel = LabelReader(labelCol);
        var examples = new List<PromptExample>();
        using var cursor = input.GetRowCursor(text2 is { } t2 ? [labelCol, text, t2] : [labelCol, text]);
        var getText = cursor.GetGetter<ReadOnlyMemory<char>>(text);
        var getText2 = text2 is { } c2 ? cursor.GetGetter<ReadOnlyMemory<char>>(c2) : null;
        var getLabel = readLabel(cursor);
        ReadOnlyMemory<char> a = default, b = default;
        long row = 0;
        while (cursor.MoveNext())
        {
            getText(ref a);
            getText2?.Invoke(ref b);
            var label = getLabel();
            if (a.Span.Trim().IsEmpty) throw new ArgumentException($"Row {row}: column '{template.TextColumn}' is empty; every few-shot example needs text.");
            if (getText2 is not null && b.Span.Trim().IsEmpty) throw new ArgumentException($"Row {row}: column '{template.Text2Column}' is empty.");
            int index = labels.ToList().IndexOf(label);
            if (index < 0) throw new ArgumentException($"Row {row}: label '{label}' is not one of the template's labels [{string.Join(", ", labels)}].");
            examples.Add(new PromptExample(a.ToString(), getText2 is null ? null : b.ToString(), index));
            row++;
        }
        for (int l = 0; l < labels.Count; l++)
            if (!examples.Any(e => e.Label == l))
                throw new ArgumentException($"Label '{labels[l]}' has no example: soft prompt tuning needs at least one example per label ({examples.Count} examples read).");
        return examples;
    }

    /// <summary>Reads a label column as text: String, or a key type with text key values.</summary>
    internal static Func<DataViewRowCursor, Func<string>> LabelReader(DataViewSchema.Column column)
    {
        if (column.Type is TextDataViewType)
            return cursor =>
            {
                var getter = cursor.GetGetter<ReadOnlyMemory<char>>(column);
                ReadOnlyMemory<char> value = default;
                return () => { getter(ref value); return value.ToString(); };
            };
        if (column.Type is KeyDataViewType && column.Annotations.Schema.GetColumnOrNull("KeyValues") is { Type: VectorDataViewType { ItemType: TextDataViewType } })
        {
            VBuffer<ReadOnlyMemory<char>> keyValues = default;
            column.GetKeyValues(ref keyValues);
            var names = keyValues.DenseValues().Select(v => v.ToString()).ToArray();
            return cursor =>
            {
                var getter = cursor.GetGetter<uint>(column);
                uint key = 0;
                return () =>
                {
                    getter(ref key);
                    if (key == 0 || key > names.Length) throw new ArgumentException($"Label column '{column.Name}' holds a missing key (0).");
                    return names[key - 1];
                };
            };
        }
        throw new ArgumentOutOfRangeException(nameof(column), $"Label column '{column.Name}' must be String or a key type with text key values, found {column.Type}.");
    }

    private static void WriteCsv(string? path, string header, IEnumerable<string> rows)
    {
        if (path is null) return;
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var temp = full + ".tmp";
        File.WriteAllLines(temp, new[] { header }.Concat(rows));
        File.Move(temp, full, overwrite: true);
    }
}
