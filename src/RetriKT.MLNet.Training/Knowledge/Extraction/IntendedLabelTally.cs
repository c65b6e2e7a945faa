using System.Globalization;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Knowledge.Extraction;

/// <summary>
/// How faithful the teacher's samples are, per label they were generated for: of the samples that have text and a
/// teacher soft label, how many the teacher gives that label (the argmax), before any filter. Both extraction paths
/// (the white-box <see cref="KnowledgeExtractor"/> and the black-box one) count here, so they report and warn alike.
/// </summary>
internal sealed class IntendedLabelTally
{
    private readonly IReadOnlyList<string> _labels;
    private readonly int[] _labelled, _intended;

    public IntendedLabelTally(IReadOnlyList<string> labels)
    {
        _labels = labels;
        _labelled = new int[labels.Count];
        _intended = new int[labels.Count];
    }

    /// <summary>Counts one sample generated for <paramref name="generatedFor"/> that has text and the teacher's <paramref name="softLabel"/>.</summary>
    public void Add(int generatedFor, float[] softLabel) => Add(generatedFor, RetrievalMix.ArgMax(softLabel));

    /// <summary>Counts one sample generated for <paramref name="generatedFor"/> to which the teacher gives <paramref name="teacherLabel"/> (its soft label's argmax).</summary>
    public void Add(int generatedFor, int teacherLabel)
    {
        _labelled[generatedFor]++;
        if (teacherLabel == generatedFor) _intended[generatedFor]++;
    }

    /// <summary>The run-wide share (0 when nothing was counted): <see cref="ExtractionReport.IntendedLabelShare"/>.</summary>
    public double Share => _labelled.Sum() == 0 ? 0 : (double)_intended.Sum() / _labelled.Sum();

    /// <summary>
    /// Warns for each label whose samples the teacher labels as intended no more often than chance. The filters then keep
    /// few of them and the store holds mostly what the teacher says anyway, so a student learns the teacher's bias: on
    /// CB, a stand-in teacher that never saw the task labelled 26 % of its samples as intended (chance 33 %) and the
    /// students trained on that store scored 8.9 % against the majority class's 50 %.
    /// </summary>
    public void WarnWhereTheTeacherIgnoresTheLabel(ComponentHost host)
    {
        double chance = 1.0 / _labels.Count;
        for (int l = 0; l < _labels.Count; l++)
        {
            if (_labelled[l] == 0) continue;
            double share = (double)_intended[l] / _labelled[l];
            if (share > chance) continue;
            host.Warning(string.Create(CultureInfo.InvariantCulture,
                $"Label '{_labels[l]}': the teacher gives {share:P1} of the {_labelled[l]:N0} samples generated for it that label, no more than chance ({chance:P1} for {_labels.Count} labels). ")
                + "The soft prompts or the generation prompt do not steer the teacher to it, or the teacher does not know the task; a student trained on this store learns the teacher's bias. "
                + "Check the teacher's accuracy on labelled rows before using the store.");
        }
    }
}
