using System.Globalization;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Knowledge.Extraction;

/// <summary>
/// How faithful the teacher's samples are, per label they were generated for: of the samples that have text and a
/// teacher soft label (for a pair template: both parts, as the Empty filter has it), how many the teacher gives that label (the argmax), before any filter. Both extraction paths
/// (the white-box <see cref="KnowledgeExtractor"/> and the black-box one) count here, so they report and warn alike.
/// </summary>
internal sealed class IntendedLabelTally
{
    private readonly IReadOnlyList<string> _labels;
    private readonly int[] _labelled, _intended;
    // [l]: samples generated for another label to which the teacher gives l
    private readonly int[] _givenElsewhere;

    public IntendedLabelTally(IReadOnlyList<string> labels)
    {
        _labels = labels;
        _labelled = new int[labels.Count];
        _intended = new int[labels.Count];
        _givenElsewhere = new int[labels.Count];
    }

    /// <summary>Counts one sample generated for <paramref name="generatedFor"/> that has text and the teacher's <paramref name="softLabel"/>.</summary>
    public void Add(int generatedFor, float[] softLabel) => Add(generatedFor, RetrievalMix.ArgMax(softLabel));

    /// <summary>Counts one sample generated for <paramref name="generatedFor"/> to which the teacher gives <paramref name="teacherLabel"/> (its soft label's argmax).</summary>
    public void Add(int generatedFor, int teacherLabel)
    {
        _labelled[generatedFor]++;
        if (teacherLabel == generatedFor) _intended[generatedFor]++;
        else _givenElsewhere[teacherLabel]++;
    }

    /// <summary>
    /// The run-wide share: <see cref="ExtractionReport.IntendedLabelShare"/>. Null when nothing was counted: 0 read as a
    /// teacher that gives no sample its intended label, which nothing showed.
    /// </summary>
    public double? Share => _labelled.Sum() == 0 ? null : (double)_intended.Sum() / _labelled.Sum();

    /// <summary>
    /// Warns for each label whose samples the teacher labels as intended no more often than chance, unless the shortfall
    /// is small (at least <see cref="SmallShortfall"/> of chance) and the prompts demonstrably steer the teacher to the
    /// label (it gives the label to that label's samples more often than to the other labels' samples, by at least
    /// <see cref="SteeringZ"/> standard errors). A warned label's store holds mostly what the teacher says anyway, so a
    /// student learns the teacher's bias: on CB, a stand-in teacher that never saw the task labelled 26 % of its samples
    /// as intended (chance 33 %) and the students trained on that store scored 8.9 % against the majority class's 50 %.
    /// The exception is for teachers like SST-2's stand-in, which knows the task (82 %) and leans to "negative": it gives
    /// "positive" to 48–50 % of the samples generated for it but to only 41–44 % of those generated for "negative", and
    /// its stores teach a student 76 % on all five seeds.
    /// </summary>
    public void WarnWhereTheTeacherIgnoresTheLabel(ComponentHost host)
    {
        double chance = 1.0 / _labels.Count;
        int allLabelled = _labelled.Sum();
        for (int l = 0; l < _labels.Count; l++)
        {
            if (_labelled[l] == 0) continue;
            double share = (double)_intended[l] / _labelled[l];
            if (share > chance) continue;
            int others = allLabelled - _labelled[l];
            double? elsewhere = others == 0 ? null : (double)_givenElsewhere[l] / others;
            if (elsewhere is double e && share >= SmallShortfall * chance && Steers(share, _labelled[l], e, others)) continue;
            host.Warning(string.Create(CultureInfo.InvariantCulture,
                $"Label '{_labels[l]}': the teacher gives {share:P1} of the {_labelled[l]:N0} samples generated for it that label, no more than chance ({chance:P1} for {_labels.Count} labels)")
                + (elsewhere is double x ? string.Create(CultureInfo.InvariantCulture, $", and {x:P1} of the samples generated for the other labels. ") : ". ")
                + "The soft prompts or the generation prompt do not steer the teacher to it, or the teacher does not know the task; a student trained on this store learns the teacher's bias. "
                + "Check the teacher's accuracy on labelled rows before using the store.");
        }
    }

    /// <summary>Share of chance above which a label's shortfall is forgiven when the prompts steer the teacher to it.</summary>
    internal const double SmallShortfall = 0.8;
    /// <summary>Standard errors by which the label's share must exceed the share the other labels' samples get for it.</summary>
    internal const double SteeringZ = 3;

    /// <summary>Whether <paramref name="share"/> of <paramref name="n"/> exceeds <paramref name="elsewhere"/> of <paramref name="m"/> by <see cref="SteeringZ"/> pooled standard errors.</summary>
    private static bool Steers(double share, int n, double elsewhere, int m)
    {
        double pooled = (share * n + elsewhere * m) / (n + m);
        double se = Math.Sqrt(pooled * (1 - pooled) * (1.0 / n + 1.0 / m));
        return se > 0 && (share - elsewhere) / se >= SteeringZ;
    }
}
