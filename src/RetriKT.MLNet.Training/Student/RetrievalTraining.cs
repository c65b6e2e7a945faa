using RetriKT.MLNet.Common;
using RetriKT.MLNet.Knowledge;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Student;

/// <summary>Hyper-parameters of one training run (taken from <see cref="RetrievalClassifierTrainer.Options"/>).</summary>
internal sealed record TrainingSettings(int Epochs, int BatchSize, double LearningRate, double WeightDecay,
    double RetrievalLossWeight, double ContrastiveLossWeight, double ContrastiveTemperature, int NeighborCount,
    bool LearnTemperature, int Seed, double TokenDropout = 0, int DropTokenId = -1);

/// <summary>
/// Early stopping on a validation split: <paramref name="ValidationNll"/> scores the model as it stands (given the
/// store's normalised embeddings under the current encoder when <paramref name="NeedsMemory"/>, else null); training
/// keeps the lowest-scoring epoch's weights and stops after <paramref name="Patience"/> epochs without a lower score,
/// and never before <paramref name="MinPatienceSteps"/> optimizer steps without one (a small store's epoch is a few steps).
/// </summary>
internal sealed record EpochSelection(int Patience, int MinPatienceSteps, bool NeedsMemory, Func<Tensor?, double> ValidationNll)
{
    /// <summary>The patience in epochs for epochs of <paramref name="stepsPerEpoch"/> steps: at least <see cref="Patience"/>, and enough for <see cref="MinPatienceSteps"/>.</summary>
    public int PatienceEpochs(int stepsPerEpoch) => Math.Max(Patience, (MinPatienceSteps + stepsPerEpoch - 1) / Math.Max(stepsPerEpoch, 1));
}

/// <summary>Labelled training examples: token ids and soft labels (row-major N × K); store entries in the same order.</summary>
internal sealed record TrainingExamples(IReadOnlyList<int[]> Ids, float[] SoftLabels, int LabelCount)
{
    public int Count => Ids.Count;
}

/// <summary>Term-match neighbours of a set of rows in <paramref name="Store"/>: entry indices [rows, k] (−1 where fewer matched) and TF-IDF cosines.</summary>
internal sealed record TermMatches(KnowledgeStore Store, int[] Indices, float[] Scores, int Rows, int K)
{
    public static TermMatches Search(LexicalIndex index, KnowledgeStore store, IReadOnlyList<int[]> queries, int k)
    {
        k = Math.Max(1, Math.Min(k, index.Count));
        var indices = new int[queries.Count * k];
        Array.Fill(indices, -1);
        var scores = new float[queries.Count * k];
        for (int i = 0; i < queries.Count; i++) index.Search(queries[i], k, indices.AsSpan(i * k, k), scores.AsSpan(i * k, k));
        return new TermMatches(store, indices, scores, queries.Count, k);
    }

    /// <summary>
    /// p_terms [rows, labels] = the store's soft vote over each row's matches (<see cref="KnowledgeStore.SoftVote"/>, the
    /// runtime's computation), and whether the row matched anything (rows that did not fall back to the head).
    /// </summary>
    public (float[] Probabilities, bool[] Matched) Distribution(double temperature)
    {
        int labels = Store.LabelCount;
        var p = new float[Rows * labels];
        var matched = new bool[Rows];
        for (int i = 0; i < Rows; i++)
        {
            var indices = Indices.AsSpan(i * K, K);
            int found = indices.IndexOf(-1) is var end and >= 0 ? end : K;
            if (found == 0) continue;
            matched[i] = true;
            Store.SoftVote(indices[..found], Scores.AsSpan(i * K, found), temperature, p.AsSpan(i * labels, labels));
        }
        return (p, matched);
    }
}

/// <summary>
/// The training loop, apart from the model. Per epoch: re-embed the whole store with the current encoder (the
/// retrieval memory), then minibatches of store entries with
/// loss = KL(t ‖ p_head) + α·KL(t ‖ p_knn) + β·InfoNCE(two dropout views), where t is the entry's soft label and
/// p_knn(y|x) = Σ_j softmax(sim(x, e_j)/τ)·t_j over the top-k memory entries other than x itself.
/// See docs/RETRIEVAL-CLASSIFIER.md for why.
/// </summary>
internal static class RetrievalTraining
{
    /// <summary>
    /// Trains <paramref name="model"/> in place for <see cref="TrainingSettings.Epochs"/> epochs, or, with
    /// <paramref name="selection"/>, until it stops improving on validation, leaving the best epoch's weights.
    /// </summary>
    public static void Train(StudentModel model, TrainingExamples data, TrainingSettings settings, int sepId, Device device, ComponentHost host,
        EpochSelection? selection = null)
    {
        int n = data.Count, labels = data.LabelCount;
        var random = new Random(settings.Seed);
        using var generator = new Generator((ulong)settings.Seed);
        model.DropoutGenerator = generator;
        try
        {
            var parameters = model.named_parameters()
                .Where(p => settings.LearnTemperature || p.name != StudentWeights.TemperatureName)
                .Select(p => p.parameter).ToList();
            if (!settings.LearnTemperature) model.get_parameter(StudentWeights.TemperatureName)!.requires_grad = false;
            using var optimizer = new HeldAdamW(parameters, settings.LearningRate, settings.WeightDecay);
            using var softLabels = torch.tensor(data.SoftLabels, [n, labels], device: device);
            int stepsPerEpoch = (n + settings.BatchSize - 1) / settings.BatchSize;
            long totalSteps = (long)stepsPerEpoch * settings.Epochs, step = 0;
            bool retrieval = settings.RetrievalLossWeight > 0 && n > 1;
            int k = Math.Min(settings.NeighborCount, n - 1);
            var order = Enumerable.Range(0, n).ToArray();
            using var best = new BestEpoch(model);
            LossSums? lastSums = null;
            int trained = 0;
            int patience = selection?.PatienceEpochs(stepsPerEpoch) ?? 0;
            if (selection is not null && patience > selection.Patience)
                host.Info($"Early stopping waits {patience} epochs without a lower validation NLL, not {selection.Patience}: an epoch is {stepsPerEpoch} steps " +
                          $"and the wait is at least {selection.MinPatienceSteps} steps.");
            // With a selection, one pass past the last epoch scores it; the memory of epoch e's start is the model after
            // epoch e − 1, so the retrieval loss's embedding pass also serves that epoch's validation score.
            for (int epoch = 1; epoch <= settings.Epochs + (selection is null ? 0 : 1); epoch++)
            {
                bool training = epoch <= settings.Epochs;
                bool scoring = selection is not null && epoch > 1;
                using var memory = (retrieval && training) || (scoring && selection!.NeedsMemory) ? EmbedAll(model, data.Ids, sepId, device, checkAlive: host.CheckAlive) : null;
                if (scoring)
                {
                    double nll = selection!.ValidationNll(memory);
                    bool improved = best.Offer(epoch - 1, nll);
                    host.Info($"Epoch {epoch - 1}: validation NLL {nll:G5}" + (improved ? " (best so far)." : $" (best {best.Nll:G5} at epoch {best.Epoch})."));
                    if (!improved && epoch - 1 - best.Epoch >= patience)
                    {
                        host.Info($"No lower validation NLL in {patience} epochs: training stops after epoch {epoch - 1} of {settings.Epochs}.");
                        break;
                    }
                }
                if (!training) break;
                model.train();
                random.Shuffle(order);
                var sums = new LossSums();
                for (int start = 0; start < n; start += settings.BatchSize)
                {
                    host.CheckAlive(); // every batch: an epoch over a store of tens of thousands of entries takes minutes
                    using var scope = torch.NewDisposeScope();
                    var batch = order.AsSpan(start, Math.Min(settings.BatchSize, n - start)).ToArray();
                    var rows = batch.Select(i => MaskTokens(data.Ids[i], settings, sepId, random)).ToList();
                    var (ids, segments, mask) = TokenBatch.Collate(rows, sepId, device);
                    var pooled = model.Encode(ids, segments, mask);
                    var loss = BatchLoss(pooled, model.Head(pooled), () => model.Encode(ids, segments, mask), batch, softLabels,
                        retrieval ? memory : null, k, model.Temperature(), settings, device, sums);
                    Step(loss, [(optimizer, settings.LearningRate)], parameters, step++, totalSteps);
                }
                sums.Report(host, epoch, settings.Epochs, settings, stepsPerEpoch, model.TemperatureValue);
                (lastSums, trained) = (sums, epoch);
            }
            // Early stopping ends training before its last epoch: the last report says it is done at the epochs it ran
            // (before, it stayed at e.g. 4 of 40, so a progress bar never reached 100 % and the stage's end was never logged).
            if (lastSums is not null && trained < settings.Epochs)
                lastSums.Report(host, trained, trained, settings, stepsPerEpoch, model.TemperatureValue);
            if (selection is not null && best.Epoch > 0)
            {
                best.Restore();
                host.Info($"Kept the weights of epoch {best.Epoch} (validation NLL {best.Nll:G5}).");
            }
        }
        finally
        {
            model.DropoutGenerator = null;
            model.get_parameter(StudentWeights.TemperatureName)!.requires_grad = true;
            model.eval();
        }
    }

    /// <summary>
    /// One minibatch's loss, shared by the tiny student's loop and <see cref="BackboneTraining"/>:
    /// KL(t ‖ p_head) + α·KL(t ‖ p_knn) + β·InfoNCE(two dropout views), t the rows' soft labels. p_knn reads the top-k of
    /// <paramref name="memory"/> (the epoch's normalised store embeddings; null when α is 0) without each row's own entry.
    /// <paramref name="secondView"/> re-encodes the same rows (another dropout draw); it is called last, so the dropout
    /// generator sees the same sequence of draws in both loops. Adds the parts' values to <paramref name="sums"/>.
    /// </summary>
    internal static Tensor BatchLoss(Tensor pooled, Tensor headLogits, Func<Tensor> secondView, int[] batch, Tensor softLabels,
        Tensor? memory, int k, Tensor temperature, TrainingSettings settings, Device device, LossSums sums)
    {
        using var batchIndex = torch.tensor(batch.Select(i => (long)i).ToArray(), device: device);
        var target = softLabels.index_select(0, batchIndex);
        var targetEntropy = (target * target.clamp_min(HeldScalars.ProbabilityFloor).log()).sum(-1);
        var kd = (targetEntropy - (target * headLogits.log_softmax(-1)).sum(-1)).mean();
        var loss = kd;
        sums.Kd += kd.item<float>();
        if (memory is not null)
        {
            var sims = nn.functional.normalize(pooled, p: 2, dim: 1).matmul(memory.t());
            // One scatter: a write per row made a scalar tensor and a device write each (a sync per row on a GPU).
            var self = torch.zeros(sims.shape, dtype: ScalarType.Bool, device: device).scatter_(1, batchIndex.unsqueeze(1),
                torch.ones(batch.Length, 1, dtype: ScalarType.Bool, device: device));
            using var never = (-1e4f).ToScalar(); // explicit and alive across the call (see HeldScalars)
            var (values, indices) = sims.masked_fill(self, never).topk(k, dim: 1); // a query never retrieves itself
            var knn = Knn(values, indices, temperature, softLabels);
            var ret = (targetEntropy - (target * knn.clamp_min(HeldScalars.ProbabilityFloor).log()).sum(-1)).mean();
            using var retrievalWeight = settings.RetrievalLossWeight.ToScalar(); // held across the call (see HeldScalars)
            loss = loss.add(ret * retrievalWeight, HeldScalars.One);
            sums.Retrieval += ret.item<float>();
        }
        if (settings.ContrastiveLossWeight > 0 && batch.Length > 1)
        {
            var z1 = nn.functional.normalize(pooled, p: 2, dim: 1);
            var z2 = nn.functional.normalize(secondView(), p: 2, dim: 1);
            using Scalar contrastiveTemperature = settings.ContrastiveTemperature.ToScalar(), contrastiveWeight = settings.ContrastiveLossWeight.ToScalar();
            var con = nn.functional.cross_entropy(z1.matmul(z2.t()) / contrastiveTemperature,
                HeldScalars.Arange(batch.Length, ScalarType.Int64, device));
            loss = loss.add(con * contrastiveWeight, HeldScalars.One);
            sums.Contrastive += con.item<float>();
        }
        return loss;
    }

    /// <summary>
    /// One optimisation step of every optimizer: zero, backward, clip the gradient norm of <paramref name="clipped"/> to
    /// 1, set each optimizer's rate to its base rate on the linear decay to 10 % over <paramref name="totalSteps"/>
    /// (few-shot runs are short and late steps should settle), step.
    /// </summary>
    internal static void Step(Tensor loss, IReadOnlyList<(HeldAdamW Optimizer, double BaseRate)> optimizers,
        IEnumerable<TorchSharp.Modules.Parameter> clipped, long step, long totalSteps)
    {
        foreach (var (optimizer, _) in optimizers) optimizer.ZeroGrad();
        loss.backward();
        nn.utils.clip_grad_norm_(clipped, 1.0);
        double decay = 1 - 0.9 * step / Math.Max(1, totalSteps - 1);
        foreach (var (optimizer, rate) in optimizers) optimizer.LearningRate = rate * decay;
        foreach (var (optimizer, _) in optimizers) optimizer.Step();
    }

    /// <summary>
    /// Word-dropout augmentation: each token other than [CLS]/[SEP] becomes [UNK] with probability TokenDropout, so the
    /// encoder cannot rest on one memorised word of a few-shot example, and learns that [UNK] — what a word never seen
    /// in training becomes with a word-level vocabulary — carries no label information.
    /// </summary>
    private static int[] MaskTokens(int[] ids, TrainingSettings settings, int sepId, Random random)
    {
        if (settings.TokenDropout <= 0 || settings.DropTokenId < 0) return ids;
        var copy = (int[])ids.Clone();
        for (int i = 1; i < copy.Length; i++)
            if (copy[i] != sepId && random.NextDouble() < settings.TokenDropout) copy[i] = settings.DropTokenId;
        return copy;
    }

    /// <summary>
    /// L2-normalised embeddings [N, D] of all rows in eval mode (no dropout), without gradient. <paramref name="checkAlive"/>
    /// runs before each batch: the pass over a store of tens of thousands of entries takes a minute, and a cancelled
    /// training stops inside it (it throws; the batches embedded so far are disposed).
    /// </summary>
    public static Tensor EmbedAll(StudentModel model, IReadOnlyList<int[]> ids, int sepId, Device device, int batchSize = 128, Action? checkAlive = null)
    {
        bool wasTraining = model.training;
        model.eval();
        var parts = new List<Tensor>();
        try
        {
            using var noGrad = torch.no_grad();
            for (int start = 0; start < ids.Count; start += batchSize)
            {
                checkAlive?.Invoke();
                // A scope per batch: one scope around the loop kept every batch's activations to its end, which grew by
                // ~400 kB per stored row per epoch (15 GB for a 37k-entry store; the process was killed for memory).
                using var scope = torch.NewDisposeScope();
                var rows = Enumerable.Range(start, Math.Min(batchSize, ids.Count - start)).Select(i => ids[i]).ToList();
                var (tokens, segments, mask) = TokenBatch.Collate(rows, sepId, device);
                parts.Add(nn.functional.normalize(model.Encode(tokens, segments, mask), p: 2, dim: 1).MoveToOuterDisposeScope());
            }
            return torch.cat(parts, 0);
        }
        finally
        {
            foreach (var p in parts) p.Dispose();
            if (wasTraining) model.train();
        }
    }

    /// <summary>
    /// Fails with one line naming the first parameter that holds NaN or infinity after training (and how many of its
    /// values do), so a diverged student never becomes a model whose predictions are NaN.
    /// </summary>
    public static void CheckFinite(nn.Module model)
    {
        using var scope = torch.NewDisposeScope();
        foreach (var (name, parameter) in model.named_parameters())
        {
            long bad = parameter.isfinite().logical_not().sum().item<long>();
            if (bad > 0)
                throw new InvalidOperationException($"Training produced non-finite weights: parameter '{name}' holds {bad} NaN or infinite values of " +
                                                    $"{parameter.numel()}; lower LearningRate or check the store's soft labels.");
        }
    }

    /// <summary>The lowest-NLL epoch so far and a copy of its parameters (and buffers), to restore after training.</summary>
    private sealed class BestEpoch(StudentModel model) : IDisposable
    {
        private readonly List<(Tensor Live, Tensor Saved)> _copies = [];
        public int Epoch { get; private set; }
        public double Nll { get; private set; } = double.PositiveInfinity;

        /// <summary>Keeps a copy of the model's weights when <paramref name="nll"/> is lower than the best so far; says whether it was.</summary>
        public bool Offer(int epoch, double nll)
        {
            if (!(nll < Nll - 1e-9)) return false;
            (Epoch, Nll) = (epoch, nll);
            using var noGrad = torch.no_grad();
            if (_copies.Count == 0)
                foreach (var live in model.parameters().Concat(model.buffers()))
                {
                    using var detached = live.detach(); // a handle of its own: left to the finalizer, one per parameter, when chained
                    _copies.Add((live, detached.clone()));
                }
            else
                foreach (var (live, saved) in _copies) saved.copy_(live);
            return true;
        }

        public void Restore()
        {
            using var noGrad = torch.no_grad();
            foreach (var (live, saved) in _copies) live.copy_(saved);
        }

        public void Dispose()
        {
            foreach (var (_, saved) in _copies) saved.Dispose();
            _copies.Clear();
        }
    }

    /// <summary>The <paramref name="weights"/>-weighted mean NLL of the gold labels under the head alone (<paramref name="encode"/>, as for <see cref="Tune"/>).</summary>
    public static double HeadNll(Func<IReadOnlyList<int[]>, (Tensor Pooled, Tensor HeadProbabilities)> encode, IReadOnlyList<int[]> ids, int[] labels, float[] weights,
        Device device)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var (_, head) = encode(ids);
        var gold = torch.tensor(labels.Select(l => (long)l).ToArray(), device: device).unsqueeze(1);
        var rowWeights = torch.tensor(weights, device: device).unsqueeze(1);
        var logGold = head.gather(1, gold).clamp_min(HeldScalars.ProbabilityFloor).log();
        return -(logGold * rowWeights).sum().item<float>() / weights.Sum();
    }

    /// <summary>The tiny student's pooled embeddings and head probabilities of token rows, in eval mode (a scorer for <see cref="Tune"/>).</summary>
    public static Func<IReadOnlyList<int[]>, (Tensor Pooled, Tensor HeadProbabilities)> Scorer(StudentModel model, int sepId, Device device) => ids =>
    {
        model.eval();
        var (tokens, segments, mask) = TokenBatch.Collate(ids, sepId, device);
        var pooled = model.Encode(tokens, segments, mask);
        return (pooled, model.Head(pooled).softmax(-1));
    };

    /// <summary>
    /// Picks λ, τ and (with <paramref name="termMatches"/>) μ and τ_terms on a validation split by the lowest
    /// <paramref name="weights"/>-weighted mean negative log-likelihood of the gold labels (smoother than accuracy on a
    /// 32-row dev set), over
    /// p = (1 − λ − μ)·p_head + λ·p_knn + μ·p_terms with λ + μ ≤ 1 on a 0.1 grid; ties keep the earlier candidate
    /// (smaller weights first). <see cref="MixSelection.HighestAccuracy"/> takes the highest weighted accuracy instead (ties:
    /// lower NLL). With <see cref="MixSelection.BootstrapAverage"/> that choice is made on
    /// <see cref="MixBootstrapSamples"/> resamples of the rows (<paramref name="seed"/>) and λ, μ are their averages, the
    /// temperatures then the lowest-NLL ones at that mix. Returns the choice and its NLL/accuracy on all rows.
    /// <paramref name="encode"/> gives the validation rows' pooled embeddings and head probabilities
    /// (<see cref="Scorer"/> for the tiny student; called once, inside this method's dispose scope and without gradient).
    /// </summary>
    public static (double Lambda, double Temperature, double Mu, double LexicalTemperature, double Nll, double Accuracy) Tune(
        Func<IReadOnlyList<int[]>, (Tensor Pooled, Tensor HeadProbabilities)> encode,
        Tensor memory, Tensor softLabels, IReadOnlyList<int[]> validationIds, int[] validationLabels, float[] weights, int neighborCount, double learnedTemperature,
        double? fixedLambda, TermMatches? termMatches, double? fixedMu, Device device, MixSelection selection = MixSelection.LowestNll, int seed = 1,
        Action? checkAlive = null)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var (pooled, head) = encode(validationIds);
        var query = nn.functional.normalize(pooled, p: 2, dim: 1);
        var (values, indices) = query.matmul(memory.t()).topk(Math.Min(neighborCount, (int)memory.shape[0]), dim: 1);
        using var gold = torch.tensor(validationLabels.Select(l => (long)l).ToArray(), device: device).unsqueeze(1);
        if (weights.Length != validationLabels.Length || !(weights.Sum() > 0))
            throw new ArgumentException($"Validation weights: {weights.Length} for {validationLabels.Length} rows, sum {weights.Sum()}; expected one per row with a positive sum.");
        using var weightSum = weights.Sum().ToScalar();
        var rowWeights = torch.tensor(weights, device: device).unsqueeze(1) / weightSum;
        double[] lambdas = fixedLambda is double f ? [f] : Enumerable.Range(0, 11).Select(i => i / 10.0).ToArray();
        double[] mus = termMatches is null ? [0.0] : fixedMu is double m ? [m] : Enumerable.Range(0, 11).Select(i => i / 10.0).ToArray();
        double[] temperatures = new[] { learnedTemperature, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0 }.Distinct().ToArray();
        double[] termTemperatures = termMatches is null ? [1.0] : [0.05, 0.1, 0.2, 0.5, 1.0];
        int labels = (int)softLabels.shape[1];

        Tensor TermsAt(double tauTerms)
        {
            if (termMatches is null) return head;
            var (probabilities, matched) = termMatches.Distribution(tauTerms);
            var matchedRows = torch.tensor(matched, device: device).unsqueeze(1);
            return torch.where(matchedRows, torch.tensor(probabilities, [termMatches.Rows, labels], device: device), head);
        }
        Tensor KnnAt(double tau) => Knn(values, indices, torch.tensor((float)tau, device: device), softLabels);
        // The mix's log-probability of each gold label [N, 1], its weighted NLL and accuracy.
        (Tensor LogGold, double Nll, double Accuracy) Score(Tensor terms, Tensor knn, double lambda, double mu)
        {
            // The weights as float Scalars held across their calls (see HeldScalars).
            using Scalar headWeight = ((float)(1 - lambda - mu)).ToScalar(), knnWeight = ((float)lambda).ToScalar(), termWeight = ((float)mu).ToScalar();
            var p = (head * headWeight).add(knn * knnWeight, HeldScalars.One).add(terms * termWeight, HeldScalars.One);
            var logGold = p.gather(1, gold).clamp_min(HeldScalars.ProbabilityFloor).log();
            double nll = -(logGold * rowWeights).sum().item<float>();
            double accuracy = (p.argmax(1).unsqueeze(1).eq(gold).to(ScalarType.Float32) * rowWeights).sum().item<float>();
            return (logGold, nll, accuracy);
        }

        var best = (Lambda: 0.0, Temperature: learnedTemperature, Mu: 0.0, LexicalTemperature: 1.0, Nll: double.PositiveInfinity, Accuracy: 0.0);
        bool byAccuracy = selection == MixSelection.HighestAccuracy;
        // Lowest NLL, or highest accuracy with ties to the lower NLL; equal ones keep the earlier candidate.
        bool Better(double nll, double accuracy) => byAccuracy && Math.Abs(accuracy - best.Accuracy) > 1e-9 ? accuracy > best.Accuracy : nll < best.Nll - 1e-9;
        var candidates = selection == MixSelection.BootstrapAverage ? new List<(double Lambda, double Mu, Tensor LogGold)>() : null;
        foreach (var tauTerms in termTemperatures)
        {
            var terms = TermsAt(tauTerms);
            foreach (var tau in temperatures)
            {
                checkAlive?.Invoke(); // up to 66 mixes per temperature; the whole grid takes seconds on a large validation set
                var knn = KnnAt(tau);
                foreach (var lambda in lambdas)
                foreach (var mu in mus)
                {
                    if (lambda + mu > 1 + 1e-9) continue;
                    var (logGold, nll, accuracy) = Score(terms, knn, lambda, mu);
                    candidates?.Add((lambda, mu, logGold));
                    if (Better(nll, accuracy)) best = (lambda, tau, mu, tauTerms, nll, accuracy);
                }
            }
        }
        if (candidates is not { Count: > 1 }) return best;

        // Bagging: the lowest-NLL candidate of each resample (its weighted NLL is resample weights · −log p), λ and μ
        // averaged over the resamples; ties keep the earlier candidate, as argmin does.
        var resamples = BootstrapWeights(weights, MixBootstrapSamples, seed);
        var nllByCandidate = torch.cat(candidates.Select(c => c.LogGold).ToArray(), 1).neg();                    // [N, C]
        var picks = torch.tensor(resamples, [MixBootstrapSamples, weights.Length], device: device).matmul(nllByCandidate).argmin(1).cpu().data<long>().ToArray(); // data<T> reads host memory
        double averageLambda = picks.Average(i => candidates[(int)i].Lambda), averageMu = picks.Average(i => candidates[(int)i].Mu);
        var bagged = (Lambda: averageLambda, Temperature: best.Temperature, Mu: averageMu, LexicalTemperature: best.LexicalTemperature, Nll: double.PositiveInfinity, Accuracy: 0.0);
        foreach (var tauTerms in termTemperatures)
        {
            var terms = TermsAt(tauTerms);
            foreach (var tau in temperatures)
            {
                var (_, nll, accuracy) = Score(terms, KnnAt(tau), averageLambda, averageMu);
                if (nll < bagged.Nll - 1e-9) bagged = (averageLambda, tau, averageMu, tauTerms, nll, accuracy);
            }
        }
        return bagged;
    }

    /// <summary>Resamples of the validation rows that <see cref="MixSelection.BootstrapAverage"/> averages over.</summary>
    internal const int MixBootstrapSamples = 200;

    /// <summary>
    /// <paramref name="samples"/> bootstrap resamples of rows with <paramref name="weights"/>, as row weights [samples × N]
    /// (each resample's summing to 1): every group of rows with the same weight (the real dev rows, the held-out
    /// generated rows) is drawn with replacement to its own size, so each group keeps its share of the weight.
    /// </summary>
    internal static float[] BootstrapWeights(float[] weights, int samples, int seed)
    {
        int n = weights.Length;
        var groups = Enumerable.Range(0, n).GroupBy(i => weights[i]).Select(g => g.ToArray()).ToList();
        var rng = SeedMixer.Random(seed, "mix-bootstrap");
        var result = new float[samples * n];
        for (int b = 0; b < samples; b++)
        {
            var row = result.AsSpan(b * n, n);
            foreach (var group in groups)
                for (int draw = 0; draw < group.Length; draw++)
                {
                    int i = group[rng.Next(group.Length)];
                    row[i] += weights[i];
                }
            float sum = 0;
            foreach (var w in row) sum += w;
            if (sum > 0) foreach (ref var w in row) w /= sum;
        }
        return result;
    }

    /// <summary>p_knn [B, K] = Σ softmax(similarity / τ)·soft label over the neighbours [B, k]; differentiable in τ.</summary>
    internal static Tensor Knn(Tensor similarities, Tensor indices, Tensor temperature, Tensor softLabels)
    {
        var weights = (similarities / temperature).softmax(-1);                                    // [B, k]
        var neighborLabels = softLabels.index_select(0, indices.flatten()).view(indices.shape[0], indices.shape[1], softLabels.shape[1]);
        return (weights.unsqueeze(-1) * neighborLabels).sum(1);                                   // [B, K]
    }
}

/// <summary>Per-epoch sums of the loss parts of <see cref="RetrievalTraining.BatchLoss"/>, reported as epoch means.</summary>
internal sealed class LossSums
{
    public double Kd, Retrieval, Contrastive;

    public void Report(ComponentHost host, int epoch, int epochs, TrainingSettings settings, int steps, double temperature)
    {
        var metrics = new Dictionary<string, double> { ["kd"] = Kd / steps, ["retrieval"] = Retrieval / steps, ["tau"] = temperature };
        if (settings.ContrastiveLossWeight > 0) metrics["contrastive"] = Contrastive / steps;
        host.Report("RetrievalClassifier", epoch, epochs, metrics);
    }
}
